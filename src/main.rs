use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = orproxy::cli::Cli::parse();
    match orproxy::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", orproxy::secret::redact(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
