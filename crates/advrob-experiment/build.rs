//! Records the exact burn version from the workspace lock file, for the provenance of every record.

fn main() {
    // the directory of this run of the script, not of the build that compiled it: a target
    // directory shared by two checkouts reuses the compiled script (`env!` read the other checkout's
    // path, found no lock file there and recorded burn as "unknown")
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock = std::path::Path::new(&dir).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut version = "unknown".to_string();
    let mut in_burn = false;
    for line in text.lines() {
        if line == "name = \"burn\"" {
            in_burn = true;
        } else if in_burn && let Some(v) = line.strip_prefix("version = ") {
            version = v.trim_matches('"').to_string();
            break;
        }
    }
    println!("cargo:rustc-env=ADVROB_BURN_VERSION={version}");
}
