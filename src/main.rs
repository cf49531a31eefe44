// jemalloc instead of the system allocator: with glibc's malloc about a tenth
// of a proxied request's CPU time went to malloc, free and the consolidation
// of freed chunks (BENCHMARKS.md). jemalloc has no MSVC build.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A .env in the working directory fills in variables that are not set
    // (flag > environment > .env > default).
    let _ = dotenvy::dotenv();
    let cli = orproxy::cli::Cli::parse();
    match orproxy::run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to say.
        Err(err)
            if matches!(
                err.downcast_ref::<orproxy::OutputError>(),
                Some(orproxy::OutputError::Closed(_))
            ) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            // The chain may quote a store file, an upstream or Redis:
            // masked, and nothing a terminal would act on.
            eprintln!(
                "error: {}",
                orproxy::visible(&orproxy::redact(&orproxy::error_chain(&err)))
            );
            ExitCode::FAILURE
        }
    }
}
