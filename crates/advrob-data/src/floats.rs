//! Floats that survive JSON: `serde_json` writes NaN and ±∞ as `null`, which a plain `f64` field
//! refuses to read back. A figure that is undefined (the mean confidence of a model whose logits
//! overflow, the loss of an epoch that diverged) must not make the file it sits in unreadable:
//! fields that can be undefined read `null` back as NaN.

use serde::{Deserialize, Deserializer};

/// Reads a number, or `null` (what `serde_json` writes for NaN and ±∞) as NaN: use with
/// `#[serde(deserialize_with = "advrob_data::floats::null_as_nan")]`.
pub fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, Deserialize)]
    struct S {
        #[serde(deserialize_with = "null_as_nan")]
        x: f64,
    }

    #[test]
    fn nan_and_infinity_read_back_as_nan_and_numbers_exactly() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let json = serde_json::to_string(&S { x: v }).expect("write");
            assert_eq!(json, r#"{"x":null}"#);
            let back: S = serde_json::from_str(&json).expect("read back");
            assert!(back.x.is_nan());
        }
        let back: S = serde_json::from_str(r#"{"x":0.1}"#).expect("read");
        assert_eq!(back.x, 0.1);
        assert!(serde_json::from_str::<S>(r#"{"x":"a"}"#).is_err());
    }
}
