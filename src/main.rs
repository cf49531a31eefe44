use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A .env in the working directory fills in variables that are not set
    // (flag > environment > .env > default).
    let _ = dotenvy::dotenv();
    let cli = orproxy::cli::Cli::parse();
    match orproxy::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", orproxy::secret::redact(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
