//! `orproxy keys remove`: delete the given keys from the store.

use crate::cli::RemoveArgs;
use crate::store::Backend;
use crate::store::edit;
use std::process::ExitCode;

pub(super) fn run(store: &Backend, args: &RemoveArgs) -> anyhow::Result<ExitCode> {
    let removed = store.update(|file| {
        let indices = edit::resolve_ids(file, &args.ids)?;
        Ok::<_, edit::IdError>(edit::remove(file, &indices))
    })??;
    for record in removed {
        crate::out!(
            "removed {} {}",
            crate::escape::visible(&record.id),
            crate::escape::visible(&record.key.masked())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
