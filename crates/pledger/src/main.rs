//! `pledger`: prompt changes under release discipline.

mod app;
mod bench;
mod cli;
mod commands;
mod demo;
mod failure;
mod heap;
mod identity;
mod keys;
mod render;
mod schedule;
mod sim;
mod ui;
mod up;
mod workers;

use std::io::Write;

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: heap::Counting<heap::Chosen> = heap::Counting(heap::Chosen);

use clap::Parser;

use crate::cli::{Cli, TopCommand};
use crate::failure::{Exit, Failure};

/// Turns transparent huge pages off for this process. The allocator commits its arenas
/// eagerly, and with huge pages an idle `pledger up` was resident at 108 MiB instead of 25 MiB
/// (bench section 6). Only for the long-running processes: short commands and the bench's
/// in-process figures keep the machine's default.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes nothing but
        // this process's huge-page policy.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(
                "could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn main() {
    #[cfg(not(feature = "system-alloc"))]
    pledger_infra::metrics::count_heap_with(heap::allocated);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage as i32
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // The bench provokes breaches on purpose: their warnings would bury its report.
    let default_log = if matches!(cli.command, TopCommand::Bench(_)) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEDGER_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if matches!(cli.command, TopCommand::Up(_) | TopCommand::Worker(_)) {
        no_huge_pages();
        #[cfg(not(feature = "system-alloc"))]
        heap::allocate_with_the_system();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if matches!(cli.command, TopCommand::Up(_) | TopCommand::Worker(_)) {
        runtime.spawn(heap::give_back_free_pages(std::time::Duration::from_secs(
            10,
        )));
    }
    let json = cli.json;
    let exit = runtime.block_on(async move {
        match cli.command {
            TopCommand::Up(ref args) => up::run(args, &cli)
                .await
                .map(|()| Exit::Success)
                .unwrap_or_else(|f| report_failure(&f, json)),
            TopCommand::Ui(ref args) => ui::run(args, &cli)
                .await
                .map(|()| Exit::Success)
                .unwrap_or_else(|f| report_failure(&f, json)),
            TopCommand::Bench(ref args) => bench::run(args)
                .await
                .map(|()| Exit::Success)
                .unwrap_or_else(|f| report_failure(&f, json)),
            TopCommand::Worker(ref args) => workers::run(&cli.nats, cli.key.as_deref(), args)
                .await
                .map(|()| Exit::Success)
                .unwrap_or_else(|f| report_failure(&f, json)),
            TopCommand::Demo => demo::run()
                .await
                .map(|()| Exit::Success)
                .unwrap_or_else(|f| report_failure(&f, json)),
            _ => {
                let app = app::App::from_cli(&cli);
                match app.run(cli.command).await {
                    Ok(report) => print_report(report, json),
                    Err(f) => report_failure(&f, json),
                }
            }
        }
    });
    std::process::exit(exit as i32);
}

/// Prints a report: its text, or with --json its one JSON object.
fn print_report(report: app::Report, json: bool) -> Exit {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", report.json);
    } else if !report.text.is_empty() {
        let _ = writeln!(out, "{}", report.text.trim_end());
    }
    report.exit
}

/// Prints a failure: one sentence on stderr, and with --json an error object on stdout.
fn report_failure(failure: &Failure, json: bool) -> Exit {
    eprintln!("error: {}", failure.message);
    if json {
        let object = serde_json::json!({ "error": { "exit_code": failure.exit as i32, "rule": failure.rule, "message": failure.message } });
        println!("{object}");
    }
    failure.exit
}
