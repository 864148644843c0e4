//! Child processes that die with the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

/// A running external program. Killed (SIGKILL) and reaped when dropped. Its stdout and
/// stderr go to a log file in its temp dir, quoted in errors so a failing start explains
/// itself.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `program` with `args` and extra environment `envs`, in `dir`, its output to
    /// `dir/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &str,
        args: &[String],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).context("creating log file")?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("cannot start `{program}`: is it installed? (scripts/test.sh installs it)")
            })?;
        Ok(Self {
            child,
            name: name.to_owned(),
            log,
        })
    }

    /// Whether the process has exited (and with what status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last part of the process's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("--- last output of {} ---\n{}", self.name, &text[start..])
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing child")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // SIGKILL now; tokio reaps the child in the background (kill_on_drop).
        let _ = self.child.start_kill();
    }
}
