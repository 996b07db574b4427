//! The benches' command line: `--name N` pairs of whole numbers (cargo bench adds `--bench`,
//! which is skipped). An unknown name is an error, so a typo never runs the default silently.

use std::collections::BTreeMap;

/// The `--name N` pairs of the command line, checked against `known`.
pub fn numeric_flags(known: &[&str]) -> anyhow::Result<BTreeMap<String, u64>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    let mut out = BTreeMap::new();
    while let Some(a) = it.next() {
        if a == "--bench" {
            continue;
        }
        let name = a.trim_start_matches("--");
        anyhow::ensure!(
            known.contains(&name),
            "unknown option {a} (known: --{})",
            known.join(", --")
        );
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{a}: {e}"))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}
