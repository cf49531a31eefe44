//! `orproxy keys reactivate`: clear the disabled flag, cooldowns and
//! failure count of the given keys (or `--all`).

use crate::cli::ReactivateArgs;
use crate::store::Backend;
use crate::store::edit;
use std::process::ExitCode;

pub(super) fn run(store: &Backend, args: &ReactivateArgs) -> anyhow::Result<ExitCode> {
    let done = store.update(|file| {
        let indices = if args.all {
            (0..file.keys.len()).collect()
        } else {
            edit::resolve_ids(file, &args.ids)?
        };
        Ok::<_, edit::IdError>(edit::reactivate(file, &indices))
    })??;
    if done.is_empty() {
        crate::out!("No keys to reactivate.")?;
    }
    for id in done {
        crate::out!("reactivated {}", crate::escape::visible(&id))?;
    }
    Ok(ExitCode::SUCCESS)
}
