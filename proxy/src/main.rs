use std::process::ExitCode;

use clap::Parser;

use nb_proxy::cli::{Args, Command, CrowdSecCommand};
use nb_proxy::settings::Settings;

// The request path allocates a little per request (headers, log entry); mimalloc's per-thread
// heaps suit the thread-per-core workers better than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nb_proxy::memory::configure();
    let args = Args::parse();
    if let Some(Command::Crowdsec {
        action: CrowdSecCommand::Check { ip },
    }) = &args.command
    {
        return crowdsec_check(&args, *ip);
    }
    let settings = match Settings::try_from(args) {
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

fn crowdsec_check(args: &Args, ip: Option<std::net::IpAddr>) -> ExitCode {
    let cfg = match nb_proxy::settings::lapi_only(args) {
        Ok(cfg) => cfg,
        Err(e) => return fail(&format!("crowdsec check: {e}")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime.map(|rt| rt.block_on(nb_proxy::crowdsec_check(cfg, ip))) {
        Ok(Ok(said)) => {
            print!("{said}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(&format!("crowdsec check: {e}")),
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("nb-proxy: {e}");
    ExitCode::FAILURE
}
