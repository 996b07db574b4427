//! The benches' command line: `--name VALUE` pairs (cargo bench adds `--bench`, which is
//! skipped). An unknown name is an error, so a typo never runs the default silently.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// The `--name VALUE` pairs of the command line, checked against `known`.
pub fn flags(known: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
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
            .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?;
        out.insert(name.to_string(), value.clone());
    }
    Ok(out)
}

/// The values of `flags` as whole numbers.
pub fn numbers(flags: BTreeMap<String, String>) -> anyhow::Result<BTreeMap<String, u64>> {
    flags
        .into_iter()
        .map(|(k, v)| {
            let n = v.parse().map_err(|e| anyhow::anyhow!("--{k} {v}: {e}"))?;
            Ok((k, n))
        })
        .collect()
}

/// The `--name N` pairs of the command line, whole numbers, checked against `known`.
pub fn numeric_flags(known: &[&str]) -> anyhow::Result<BTreeMap<String, u64>> {
    numbers(flags(known)?)
}
