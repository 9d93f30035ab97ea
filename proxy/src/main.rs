use std::process::ExitCode;

use clap::Parser;

use nb_proxy::cli::Args;
use nb_proxy::settings::Settings;

// The request path allocates a little per request (headers, log entry); mimalloc's per-thread
// heaps suit the thread-per-core workers better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let settings = match Settings::try_from(Args::parse()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    nb_proxy::process::private_files();
    nb_proxy::process::survive_file_size_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    settings.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime.map(|rt| rt.block_on(nb_proxy::app::run(settings))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("{e}");
            fail(&e)
        }
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("nb-proxy: {e}");
    ExitCode::FAILURE
}
