//! External commands (freeze/thaw hooks, lvm2 and thin-provisioning-tools), run through
//! duct so a failure's command line and stderr reach the error message.
use crate::error::{Error, Result};

/// Runs `argv` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(argv: &[String]) -> Result<()> {
    output(argv, &[]).map(|_| ())
}

/// Runs `argv` with extra environment `env` and returns its stdout; a non-zero exit
/// is an error carrying the command line and its stderr.
pub fn output(argv: &[String], env: &[(&str, &str)]) -> Result<String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::InvalidArgument("empty command".into()))?;
    let command = argv.join(" ");
    let mut cmd = duct::cmd(program, args)
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        // A process group of its own: a stop signal meant for cascade (Ctrl-C at a
        // terminal, systemd's SIGTERM to the service's processes) must not kill a
        // freeze hook or an lvcreate half way; cascade finishes or abandons the
        // cycle itself, and runs the thaw hook either way.
        .before_spawn(|c| {
            std::os::unix::process::CommandExt::process_group(c, 0);
            Ok(())
        });
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run().map_err(|e| Error::Command {
        command: command.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_command_and_stderr() {
        let argv: Vec<String> = ["sh", "-c", "echo frozen-fs-busy >&2; exit 3"]
            .map(String::from)
            .to_vec();
        let e = run(&argv).unwrap_err().to_string();
        assert!(
            e.contains("sh -c") && e.contains("frozen-fs-busy") && e.contains('3'),
            "{e}"
        );
        run(&["true".to_string()]).unwrap();
    }
}
