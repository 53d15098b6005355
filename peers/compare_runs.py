"""advrob's attack records beside the peer reference of attack_compare.py, on the same weights and
the same test images: robust accuracy per (model, attack, eps) and, where both kept per-example
results, how many images the two disagree on. usage:

    python peers/compare_runs.py RUN_DIR REFERENCE.json > peers/results/compare-<date>.md

RUN_DIR holds advrob records (records/*.jsonl) of a matrix run on the first n test images with the
attacks named below; REFERENCE.json is attack_compare.py's output for the same checkpoints."""
import glob, json, sys

# the peer's attack -> advrob's record name
NAMES = {
    "apgd-ce": "apgd-ce-100",
    "apgd-t": "apgd-t-100-top9",
    "fmn": "fmn-linf-100",
    "square": "square-5000",
    "aa-square": "square-5000",
    "pgd20": "pgd-linf-20",
    "aa-components": "ensemble(apgd-ce,apgd-t,fmn,square)",
}
PEER = {
    "apgd-ce": "APGD-CE (torchattacks, 100 steps)",
    "apgd-t": "APGD-T (torchattacks, 9 targets × 100 steps)",
    "fmn": "FMN-L∞ (foolbox, 100 steps)",
    "square": "Square (torchattacks, 5000 queries)",
    "aa-square": "Square (fra31/auto-attack a392200, 5000 queries, resc_schedule=False)",
    "pgd20": "PGD-20 (torchattacks)",
    "aa-components": "AutoAttack standard, 100 steps (peer: APGD-CE, APGD-T, FAB-T, Square; advrob: its ensemble, FMN for FAB-T)",
    "worst-case": "worst case over every attack run, per example",
}


def bits(hexed):
    """advrob's per-example bits ('<hex>:<len>', 4 per digit, most significant first)."""
    h, n = hexed.rsplit(":", 1)
    out = []
    for c in h:
        v = int(c, 16)
        out.extend(bool(v & (8 >> i)) for i in range(4))
    return out[: int(n)]


def worst_of(ours, model, eps, n):
    """advrob's per-example worst case over every attack it ran on `model` at `eps`, as a record."""
    rs = [r for (m, _, e, k), r in ours.items() if (m, e, k) == (model, eps, n)]
    if not rs or not all(r.get("adversarial_correct_examples") for r in rs):
        return None
    correct = [all(col) for col in zip(*(bits(r["adversarial_correct_examples"]) for r in rs))]
    hexed = "".join(
        format(sum(8 >> i for i, b in enumerate(correct[j:j + 4]) if b), "x") for j in range(0, len(correct), 4)
    )
    return {"adversarial_accuracy": sum(correct) / len(correct), "adversarial_correct_examples": f"{hexed}:{len(correct)}"}


def main(run, ref):
    ours = {}
    for f in sorted(glob.glob(f"{run}/records/*.jsonl")):
        for line in open(f):
            r = json.loads(line)
            ours.setdefault((r["model"], r["attack"], round(r["eps"], 3), r["examples"]), r)
    peer = json.load(open(ref))
    n = peer["meta"]["n"]
    print(f"advrob (`{run}`) and the peer reference (`{ref}`, torchattacks {peer['meta']['versions']['torchattacks']}, "
          f"foolbox {peer['meta']['versions']['foolbox']}) on the same weights and the first {n} test images. "
          "Robust accuracy: clean-correct and correct after the attack. Δ = advrob − peer in points "
          "(negative: advrob's attack is stronger); 'differ' counts the images on which the two disagree.\n")
    print("| model | attack | ε | peer | advrob | Δ (pts) | differ |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for m in peer["models"]:
        for res in m["results"]:
            a, e = res["attack"], round(res["eps"], 3)
            if a not in PEER:
                continue
            o = worst_of(ours, m["name"], e, n) if a == "worst-case" else ours.get((m["name"], NAMES[a], e, n))
            if o is None:
                print(f"| {m['name']} | {PEER[a]} | {e} | {res['robust_acc']:.1%} | – | – | – |")
                continue
            differ = "–"
            if res.get("robust") and o.get("adversarial_correct_examples"):
                pb = [c == "1" for c in res["robust"]]
                ob = bits(o["adversarial_correct_examples"])
                differ = str(sum(x != y for x, y in zip(pb, ob)))
            d = 100 * (o["adversarial_accuracy"] - res["robust_acc"])
            print(f"| {m['name']} | {PEER[a]} | {e} | {res['robust_acc']:.1%} | {o['adversarial_accuracy']:.1%} | {d:+.1f} | {differ} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
