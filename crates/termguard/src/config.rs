//! The command line, completed from an optional configuration file, and read under the name
//! the binary was started as (`kubectl-termguard`, as a kubectl plugin).
//!
//! `--config FILE` (or `TERMGUARD_CONFIG`) names a YAML mapping of the subcommand's long
//! option names to values:
//!
//! ```yaml
//! queue-url: https://sqs.us-east-1.amazonaws.com/123456789012/termguard
//! cluster-name: prod
//! max-concurrent-drains: 20
//! webhook-events: [drain-started, completed-at-deadline]
//! no-events: false
//! ```
//!
//! The command line wins over the environment, and the environment over the file: a file
//! value is used only for an option given neither way. An unknown key, or a key for an option
//! the subcommand does not have, is an error that names it.

use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;

/// The name the binary answers to as a kubectl plugin: `kubectl termguard …` runs it
/// ([kubectl plugins](https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/)).
pub const PLUGIN_NAME: &str = "kubectl-termguard";

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a YAML mapping of option names to values.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        why: String,
    },
}

/// The value of `--config FILE` / `--config=FILE` on the command line, else `TERMGUARD_CONFIG`.
fn config_path(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut it = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_string());
        }
    }
    env("TERMGUARD_CONFIG").filter(|v| !v.is_empty())
}

/// A YAML scalar as an option value.
fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `args` with the file's settings added for the options given neither on the command line
/// nor in the environment (`env`). `text` is the file's content, `path` its name for errors.
pub fn merge(
    cmd: &clap::Command,
    args: Vec<OsString>,
    text: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        path: path.to_string(),
        why,
    };
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => return Ok(args),
        _ => return Err(invalid("not a mapping of option names to values".into())),
    };
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    let Some(sub) = words
        .iter()
        .skip(1)
        .take_while(|w| w.as_str() != "--")
        .find(|w| names.contains(&w.as_str()))
        .and_then(|w| cmd.find_subcommand(w))
    else {
        return Ok(args); // no subcommand: clap says what is missing
    };
    let mut out = args;
    for (key, value) in &map {
        let key = key
            .as_str()
            .ok_or_else(|| invalid(format!("key {key:?} is not an option name")))?;
        if key == "config" {
            continue;
        }
        let arg = sub
            .get_arguments()
            .chain(cmd.get_arguments())
            .find(|a| a.get_long() == Some(key))
            .ok_or_else(|| {
                invalid(format!(
                    "{key}: `termguard {}` has no option --{key}",
                    sub.get_name()
                ))
            })?;
        let on_line = words.iter().any(|w| {
            w == &format!("--{key}")
                || w.starts_with(&format!("--{key}="))
                || arg
                    .get_short()
                    .is_some_and(|c| w == &format!("-{c}") || w.starts_with(&format!("-{c}=")))
        });
        let in_env = arg
            .get_env()
            .and_then(|e| env(&e.to_string_lossy()))
            .is_some();
        if on_line || in_env {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match value {
            serde_yaml_ng::Value::Bool(b) if !takes_value => {
                if *b {
                    out.push(format!("--{key}").into());
                }
            }
            serde_yaml_ng::Value::Sequence(items) if takes_value => {
                for item in items {
                    let v = scalar(item).ok_or_else(|| {
                        invalid(format!("{key}: a list of plain values is needed"))
                    })?;
                    out.push(format!("--{key}={v}").into());
                }
            }
            v if takes_value => {
                let v =
                    scalar(v).ok_or_else(|| invalid(format!("{key}: a plain value is needed")))?;
                out.push(format!("--{key}={v}").into());
            }
            _ => return Err(invalid(format!("{key}: true or false is needed"))),
        }
    }
    Ok(out)
}

/// Parses the process's command line (exiting with clap's message on an error), completed
/// from the configuration file, and under `kubectl termguard` when run as the plugin.
pub fn parse() -> crate::cli::Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let env = |k: &str| std::env::var(k).ok();
    let plugin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy() == PLUGIN_NAME);
    let mut cmd = crate::cli::Cli::command();
    if plugin {
        cmd = cmd.bin_name("kubectl termguard");
    }
    let args = match config_path(&args, &env) {
        None => args,
        Some(path) => {
            let merged = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| merge(&cmd, args, &text, &path, &env));
            match merged {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("termguard: --config: {e}");
                    std::process::exit(2);
                }
            }
        }
    };
    let matches = cmd.get_matches_from(args);
    match crate::cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        crate::cli::Cli::command()
    }

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn words(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    const FILE: &str = "
queue-url: https://sqs.us-east-1.amazonaws.com/123456789012/from-file
cluster-name: prod
max-concurrent-drains: 20
drain-on-rebalance: true
no-events: false
webhook-url: http://127.0.0.1:9/hook
webhook-events: [drain-started, completed-at-deadline]
";

    #[test]
    fn file_values_fill_in_what_the_command_line_and_the_environment_do_not_give() {
        let none = |_: &str| None;
        let merged = merge(
            &cmd(),
            args("termguard run --max-concurrent-drains 5"),
            FILE,
            "f.yaml",
            &none,
        )
        .map(words)
        .unwrap_or_default();
        assert_eq!(
            merged,
            [
                "termguard",
                "run",
                "--max-concurrent-drains",
                "5",
                "--queue-url=https://sqs.us-east-1.amazonaws.com/123456789012/from-file",
                "--cluster-name=prod",
                "--drain-on-rebalance",
                "--webhook-url=http://127.0.0.1:9/hook",
                "--webhook-events=drain-started",
                "--webhook-events=completed-at-deadline",
            ]
        );
        // The environment wins over the file.
        let env = |k: &str| (k == "TERMGUARD_CLUSTER_NAME").then(|| "staging".to_string());
        let merged = merge(&cmd(), args("termguard run"), FILE, "f.yaml", &env)
            .map(words)
            .unwrap_or_default();
        assert!(!merged.iter().any(|w| w.starts_with("--cluster-name")));
        // And the result parses into the settings.
        let merged =
            merge(&cmd(), args("termguard run"), FILE, "f.yaml", &none).unwrap_or_default();
        let cli = cmd()
            .try_get_matches_from(merged)
            .map_err(|e| e.to_string())
            .and_then(|m| crate::cli::Cli::from_arg_matches(&m).map_err(|e| e.to_string()));
        match cli.map(|c| c.command) {
            Ok(crate::cli::Command::Run(r)) => {
                assert_eq!(r.max_concurrent_drains, 20);
                assert!(r.drain_on_rebalance);
                assert_eq!(r.webhook_events.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_the_subcommand_does_not_have_or_a_wrong_value_is_named() {
        let none = |_: &str| None;
        for (text, want) in [
            (
                "queue-urll: x\n",
                "queue-urll: `termguard run` has no option --queue-urll",
            ),
            (
                "drain-on-rebalance: yes-please\n",
                "drain-on-rebalance: true or false is needed",
            ),
            (
                "cluster-name: {a: 1}\n",
                "cluster-name: a plain value is needed",
            ),
            ("- a\n- b\n", "not a mapping"),
        ] {
            let err = merge(&cmd(), args("termguard run"), text, "f.yaml", &none)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // `run`'s options are not `explain`'s.
        let err = merge(
            &cmd(),
            args("termguard explain m.json"),
            FILE,
            "f.yaml",
            &none,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("`termguard explain` has no option --queue-url"),
            "{err}"
        );
    }

    #[test]
    fn the_file_is_named_on_the_command_line_or_in_the_environment() {
        let none = |_: &str| None;
        assert_eq!(
            config_path(&args("termguard run --config /etc/tg.yaml"), &none).as_deref(),
            Some("/etc/tg.yaml")
        );
        assert_eq!(
            config_path(&args("termguard --config=/a.yaml run"), &none).as_deref(),
            Some("/a.yaml")
        );
        let env = |k: &str| (k == "TERMGUARD_CONFIG").then(|| "/b.yaml".to_string());
        assert_eq!(
            config_path(&args("termguard run"), &env).as_deref(),
            Some("/b.yaml")
        );
        assert_eq!(config_path(&args("termguard run"), &none), None);
    }
}
