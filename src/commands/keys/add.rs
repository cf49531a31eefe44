//! `orproxy keys add`: from the hidden prompt, stdin or `--key`, each key
//! checked with OpenRouter (unless `--no-verify`) and stored under one lock.
//! What OpenRouter says (labels, accounts, messages) is printed escaped.

use crate::cli::AddArgs;
use crate::escape::visible;
use crate::model::KeyInfo;
use crate::openrouter::keyinfo::{self, KeyCheck};
use crate::secret::ApiKey;
use crate::store::Backend;
use crate::store::edit::{self, Added};
use anyhow::Context;
use chrono::Utc;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

/// A key checked and ready to store: what OpenRouter said about it, or
/// why it is unverified.
struct Ready {
    key: ApiKey,
    info: Option<KeyInfo>,
    unverified: Option<String>,
}

/// A key as given, before checks: where it came from, for messages that must
/// not repeat the key itself.
struct GivenKey {
    origin: String,
    raw: String,
}

pub(super) fn run(store: &Backend, args: &AddArgs) -> anyhow::Result<ExitCode> {
    let mut adder = Adder::new(store, args);
    if !args.keys.is_empty() {
        let batch = args
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| GivenKey {
                origin: format!("--key #{}", i + 1),
                raw: k.clone(),
            })
            .collect();
        adder.add_batch(batch)?;
    } else if std::io::stdin().is_terminal() {
        adder.interactive()?;
    } else {
        let batch = read_stdin_keys()?;
        if batch.is_empty() {
            eprintln!(
                "error: no keys on stdin (one key per line; blank lines and # comments are skipped)"
            );
            return Ok(ExitCode::FAILURE);
        }
        adder.add_batch(batch)?;
    }
    Ok(if adder.refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_stdin_keys() -> anyhow::Result<Vec<GivenKey>> {
    let stdin = std::io::stdin();
    let mut out = Vec::new();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("cannot read keys from stdin")?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push(GivenKey {
            origin: format!("stdin line {}", n + 1),
            raw: trimmed.to_owned(),
        });
    }
    Ok(out)
}

struct Adder<'a> {
    store: &'a Backend,
    args: &'a AddArgs,
    runtime: Option<actix_web::rt::SystemRunner>,
    refused: usize,
}

impl<'a> Adder<'a> {
    fn new(store: &'a Backend, args: &'a AddArgs) -> Self {
        let runtime = (!args.no_verify).then(actix_web::rt::System::new);
        Self {
            store,
            args,
            runtime,
            refused: 0,
        }
    }

    fn interactive(&mut self) -> anyhow::Result<()> {
        let theme = dialoguer::theme::SimpleTheme;
        loop {
            let raw = dialoguer::Password::with_theme(&theme)
                .with_prompt("OpenRouter API key (input hidden)")
                .interact()
                .context("cannot read the key from the terminal")?;
            self.add_batch(vec![GivenKey {
                origin: "the key entered".into(),
                raw: raw.trim().to_owned(),
            }])?;
            let again = dialoguer::Confirm::with_theme(&theme)
                .with_prompt("Add another key?")
                .default(false)
                .interact()
                .context("cannot read the answer from the terminal")?;
            if !again {
                return Ok(());
            }
        }
    }

    /// Check one key and ask OpenRouter about it: ready to store (with
    /// what OpenRouter said, or why it is unverified), or refused.
    fn check(&mut self, candidate: GivenKey) -> anyhow::Result<Option<Ready>> {
        let key = match ApiKey::parse(&candidate.raw) {
            Ok(key) => key,
            Err(e) => {
                eprintln!("error: {} refused: {e}", candidate.origin);
                self.refused += 1;
                return Ok(None);
            }
        };
        // Control characters are refused, but a bidi mark is not.
        let masked = visible(&key.masked()).into_owned();
        if let Some(problem) = key.not_openrouter() {
            eprintln!(
                "warning: {} ({masked}) {problem}, so it is probably not an OpenRouter key \
                 (they are sk-or-v1- and 64 hexadecimal digits); adding it anyway",
                candidate.origin,
            );
        }
        let (info, unverified) = match self.verify(&key) {
            Some(KeyCheck::Known(info)) => {
                let said = keyinfo::describe(&info);
                crate::out!("{masked}: OpenRouter says {}", visible(&said))?;
                (Some(info), None)
            }
            None => (None, Some("--no-verify".to_owned())),
            Some(KeyCheck::Rejected(e)) => {
                eprintln!(
                    "error: {} ({masked}) not added: {}",
                    candidate.origin,
                    visible(&e.to_string())
                );
                self.refused += 1;
                return Ok(None);
            }
            Some(KeyCheck::Unknown(e)) => {
                let why = visible(&e.to_string()).into_owned();
                eprintln!("warning: {masked} could not be verified ({why}); adding it unverified");
                (None, Some("OpenRouter could not be asked".to_owned()))
            }
        };
        Ok(Some(Ready {
            key,
            info,
            unverified,
        }))
    }

    /// Check, verify and store a batch of keys under one lock.
    fn add_batch(&mut self, batch: Vec<GivenKey>) -> anyhow::Result<()> {
        let mut ready = Vec::new();
        for candidate in batch {
            ready.extend(self.check(candidate)?);
        }
        if ready.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let label = self.args.label.as_deref();
        let results = self.store.update(|file| {
            ready
                .iter()
                .map(|r| {
                    let added = edit::add_key(file, &r.key, label, None, now);
                    if let Some(info) = r.info.clone() {
                        // Its account's counts stay true (a key re-added
                        // brings its own counts to its account).
                        crate::pool::accounts::learn(file, added.id(), info, now);
                    }
                    added
                })
                .collect::<Vec<_>>()
        })?;
        let store = self.store.describe();
        for (r, added) in ready.iter().zip(results) {
            let masked = visible(&r.key.masked()).into_owned();
            let unverified = r.unverified.as_ref().map_or_else(String::new, |why| {
                format!(
                    " (unverified: {why}; `orproxy keys check {}` verifies it)",
                    visible(added.id())
                )
            });
            match added {
                Added::New(id) => crate::out!("added {id} {masked} to {store}{unverified}")?,
                Added::Reactivated(id) => crate::out!(
                    "{masked} was already stored as {id} in {store}: reactivated (cooldown, \
                     failures and disabled flag cleared){unverified}"
                )?,
            }
        }
        Ok(())
    }

    /// What OpenRouter says about `key` (None with `--no-verify`).
    fn verify(&self, key: &ApiKey) -> Option<KeyCheck> {
        let system = self.runtime.as_ref()?;
        let upstream = &self.args.upstream;
        Some(system.block_on(async {
            keyinfo::check(&keyinfo::client(), upstream, key, Utc::now()).await
        }))
    }
}
