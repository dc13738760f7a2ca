//! The `mountleak` binary: parses the command line, sets up logging, and
//! hands over to `scan` or `daemon`. Exit codes: 0 fine, 1 leak found
//! (scan), 2 error.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mountleak::cli::{Cli, Command};
use mountleak::config::{Config, Format, DEFAULT_TOML};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mountleak: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Config = cli.command {
        print!("{DEFAULT_TOML}");
        return Ok(0);
    }
    let mut cfg = Config::load(cli.global.config.as_deref())?;
    cli.global.apply(&mut cfg);
    cfg.validate(std::path::Path::new("the command line"))?;
    match cli.command {
        Command::Scan(args) => {
            let report = mountleak::scan::scan(&cfg)?;
            let json = cfg.output.format == Format::Json;
            mountleak::scan::print(
                &report,
                json,
                args.fail_on_risk,
                &mut std::io::stdout().lock(),
            )
        }
        Command::Check(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let outcome = runtime.block_on(mountleak::check::check(&cfg, &args.target))?;
            let json = cfg.output.format == Format::Json;
            mountleak::check::print(&outcome, json, &mut std::io::stdout().lock())
        }
        Command::Run(args) => {
            args.apply(&mut cfg);
            cfg.validate(std::path::Path::new("the command line"))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let exit_after = args.exit_after;
            runtime.block_on(async move {
                let shutdown = async move {
                    match exit_after {
                        Some(d) => tokio::select! { () = tokio::time::sleep(d) => {}, () = signals() => {} },
                        None => signals().await,
                    }
                };
                mountleak::daemon::run(cfg, std::io::stdout(), shutdown).await
            })?;
            Ok(0)
        }
        Command::Timeline(args) => mountleak::timeline::run(&cfg, &args),
        Command::Doctor(args) => mountleak::doctor::run(&cfg, &args),
        Command::Fix(args) => mountleak::fix::run(&cfg, &args),
        Command::Config => unreachable!("handled above"),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Logs go to stderr (findings go to stdout): info by default, `-v` debug,
/// `-vv` trace; `RUST_LOG` overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "mountleak=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
