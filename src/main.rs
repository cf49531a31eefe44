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
                err.downcast_ref::<orproxy::output::OutputError>(),
                Some(orproxy::output::OutputError::Closed(_))
            ) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", orproxy::secret::redact(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
