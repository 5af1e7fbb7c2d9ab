//! The `cascade` binary: parse arguments, set up logging, run a verb, map the error
//! to an exit code. Everything else is in the library.
mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Before the threads allocate: see the function for why.
    cascade::sys::limit_malloc_arenas(2);
    let args = cli::Cli::parse();
    cli::init_logging(
        args.verbose,
        args.log_format,
        matches!(args.command, cli::Command::Run(_)),
    );
    cli::progress::set_mode(args.progress);
    // The library does blocking file I/O; keep it off the async worker threads.
    let outcome = tokio::task::spawn_blocking(move || cli::run(args.command)).await;
    match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("cascade: error: {e:#}");
            cli::exit_code(&e)
        }
        Err(e) => {
            eprintln!("cascade: internal error: {e}");
            std::process::ExitCode::from(70)
        }
    }
}
