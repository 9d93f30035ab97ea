use std::process::ExitCode;

use clap::Parser;

use nb_management::cli::{Args, Command};
use nb_management::config::Config;

fn main() -> ExitCode {
    let mut args = Args::parse();
    let command = args.command.take();
    if args.openapi {
        println!("{}", nb_management::api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(Command::User(user)) = command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        return match runtime.map(|rt| rt.block_on(nb_management::users_cli::run(&config, user))) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => fail(&e),
            Err(e) => fail(&format!("cannot start the runtime: {e}")),
        };
    }
    nb_management::secrets::private_files();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime.map(|rt| rt.block_on(nb_management::app::run(config))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("{e}");
            fail(&e)
        }
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("nb-management: {e}");
    ExitCode::FAILURE
}
