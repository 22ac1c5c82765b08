//! Progress of a training run: a live bar on a terminal, plain periodic lines in a log.
//!
//! On a terminal (stderr is a TTY) an indicatif bar shows the step, elapsed time, ETA and the
//! latest loss. When stderr is a file or a pipe (CI, `nohup`, a cluster's log), a bar would fill
//! the log with control codes, so lines like
//! `step 40/200 loss 0.6812 lr 1.00e-6 2.41 steps/s elapsed 16s eta 1m06s` are printed instead,
//! on the first and last step and every `every` steps in between.
//! Either way [`Progress::println`] writes a message (evaluation results, checkpoint saved)
//! without breaking the display.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
pub enum ProgressMode {
    /// An indicatif bar on stderr.
    Bar,
    /// A line every `every` steps (and on the first and last) to `out`.
    Lines {
        /// Steps between lines (at least 1).
        every: u64,
        /// Where lines go (stderr in a run, a buffer in tests).
        out: Box<dyn Write + Send>,
    },
    /// Nothing (e.g. when a caller reports progress itself).
    Hidden,
}

impl ProgressMode {
    /// A bar when stderr is a terminal, else about 20 lines over the run on stderr.
    pub fn auto(total_steps: u64) -> Self {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines {
                every: default_line_interval(total_steps),
                out: Box::new(std::io::stderr()),
            }
        }
    }
}

/// Steps between plain lines: about 20 lines per run, at least one step apart.
pub fn default_line_interval(total_steps: u64) -> u64 {
    (total_steps / 20).max(1)
}

enum Display {
    Bar(ProgressBar),
    Lines {
        every: u64,
        out: Box<dyn Write + Send>,
    },
    Hidden,
}

/// Reports the progress of a run of known length.
pub struct Progress {
    display: Display,
    total_steps: u64,
    first_step: u64,
    started: Instant,
    /// In line mode, the count from which [`Progress::advance`] prints its next line.
    next_line: u64,
}

impl Progress {
    /// A reporter for steps `start_step + 1 ..= total_steps`, shown as [`ProgressMode::auto`] picks.
    pub fn new(total_steps: u64, start_step: u64) -> Self {
        Self::with_mode(total_steps, start_step, ProgressMode::auto(total_steps))
    }

    /// A reporter with an explicit display mode (`start_step` is non-zero when resuming).
    pub fn with_mode(total_steps: u64, start_step: u64, mode: ProgressMode) -> Self {
        let display = match mode {
            ProgressMode::Bar => {
                let bar =
                    ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg} eta {eta}",
                )
                .expect("the progress template is valid")
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_position(start_step);
                // A resumed run's first steps would otherwise look instantaneous to the ETA.
                bar.reset_eta();
                Display::Bar(bar)
            }
            ProgressMode::Lines { every, out } => Display::Lines {
                every: every.max(1),
                out,
            },
            ProgressMode::Hidden => Display::Hidden,
        };
        Progress {
            display,
            total_steps,
            first_step: start_step,
            started: Instant::now(),
            next_line: 0,
        }
    }

    /// Records that optimizer step `step` finished with `loss` at learning rate `lr`; `extra`
    /// metrics (e.g. `("acc", 0.62)`) are shown after the loss.
    pub fn update(&mut self, step: u64, loss: f64, lr: f64, extra: &[(&str, f64)]) {
        let elapsed = self.started.elapsed();
        match &mut self.display {
            Display::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(format_metrics(loss, lr, extra));
            }
            Display::Lines { every, out } => {
                let due = step == self.first_step + 1
                    || step == self.total_steps
                    || step.is_multiple_of(*every);
                if due {
                    let steps_done = step.saturating_sub(self.first_step);
                    let line =
                        format_line(step, self.total_steps, loss, lr, extra, elapsed, steps_done);
                    // Progress output is best effort: a closed stderr must not stop training.
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Display::Hidden => {}
        }
    }

    /// Records that `done` of the total items of a pass that is not training (the reference
    /// log-probs before step 1, `precompute-ref`) are finished; `what` names them.
    pub fn advance(&mut self, done: u64, what: &str) {
        let elapsed = self.started.elapsed();
        match &mut self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(what.to_string());
            }
            Display::Lines { every, out } => {
                if done >= self.next_line || done == self.total_steps {
                    self.next_line = done + *every;
                    let secs = elapsed.as_secs_f64().max(1e-9);
                    let rate = done as f64 / secs;
                    let remaining = self.total_steps.saturating_sub(done) as f64 / rate.max(1e-9);
                    let _ = writeln!(
                        out,
                        "{what} {done}/{} {rate:.1}/s elapsed {} eta {}",
                        self.total_steps,
                        format_duration(elapsed),
                        format_duration(Duration::from_secs_f64(remaining.min(1e7)))
                    );
                    let _ = out.flush();
                }
            }
            Display::Hidden => {}
        }
    }

    /// Prints a message on its own line, above the bar if there is one.
    pub fn println(&mut self, message: &str) {
        match &mut self.display {
            Display::Bar(bar) => bar.println(message),
            Display::Lines { out, .. } => {
                let _ = writeln!(out, "{message}");
                let _ = out.flush();
            }
            Display::Hidden => {}
        }
    }

    /// Ends the display, leaving the final state visible.
    pub fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish();
        }
    }
}

fn format_metrics(loss: f64, lr: f64, extra: &[(&str, f64)]) -> String {
    let mut s = format!("loss {loss:.4} lr {lr:.2e}");
    for (name, value) in extra {
        s.push_str(&format!(" {name} {value:.4}"));
    }
    s
}

/// One plain progress line; `steps_done` steps took `elapsed` (this session only, so a resumed
/// run's rate is not inflated by the steps it skipped).
pub fn format_line(
    step: u64,
    total_steps: u64,
    loss: f64,
    lr: f64,
    extra: &[(&str, f64)],
    elapsed: Duration,
    steps_done: u64,
) -> String {
    let mut line = format!(
        "step {step}/{total_steps} {}",
        format_metrics(loss, lr, extra)
    );
    let secs = elapsed.as_secs_f64();
    if steps_done > 0 && secs > 0.0 {
        let rate = steps_done as f64 / secs;
        let remaining = total_steps.saturating_sub(step) as f64 / rate;
        line.push_str(&format!(
            " {rate:.2} steps/s elapsed {} eta {}",
            format_duration(elapsed),
            format_duration(Duration::from_secs_f64(remaining))
        ));
    }
    line
}

/// A short human duration: `9s`, `1m12s`, `2h05m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose contents the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(9)), "9s");
        assert_eq!(format_duration(Duration::from_secs(72)), "1m12s");
        assert_eq!(
            format_duration(Duration::from_secs(2 * 3600 + 5 * 60 + 7)),
            "2h05m"
        );
    }

    #[test]
    fn line_has_step_loss_rate_and_eta() {
        let line = format_line(
            40,
            200,
            0.68123,
            1e-6,
            &[("acc", 0.5)],
            Duration::from_secs(20),
            40,
        );
        assert_eq!(
            line,
            "step 40/200 loss 0.6812 lr 1.00e-6 acc 0.5000 2.00 steps/s elapsed 20s eta 1m20s"
        );
        let line = format_line(1, 10, 0.7, 1e-3, &[], Duration::ZERO, 0);
        assert_eq!(line, "step 1/10 loss 0.7000 lr 1.00e-3");
    }

    #[test]
    fn lines_on_first_last_and_every_n_steps() {
        let out = Shared::default();
        let mut p = Progress::with_mode(
            10,
            0,
            ProgressMode::Lines {
                every: 4,
                out: Box::new(out.clone()),
            },
        );
        for step in 1..=10 {
            p.update(step, 0.5, 1e-5, &[]);
        }
        p.println("eval loss 0.4");
        p.finish();
        let steps: Vec<String> = out
            .text()
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            steps,
            [
                "step 1/10",
                "step 4/10",
                "step 8/10",
                "step 10/10",
                "eval loss"
            ]
        );
    }

    #[test]
    fn resumed_run_starts_lines_at_its_first_step() {
        let out = Shared::default();
        let mut p = Progress::with_mode(
            100,
            50,
            ProgressMode::Lines {
                every: 25,
                out: Box::new(out.clone()),
            },
        );
        for step in 51..=100 {
            p.update(step, 0.5, 1e-5, &[]);
        }
        let text = out.text();
        let firsts: Vec<&str> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(firsts, ["51/100", "75/100", "100/100"]);
        assert_eq!(default_line_interval(200), 10);
        assert_eq!(default_line_interval(5), 1);
    }

    #[test]
    fn bar_and_hidden_modes_accept_updates() {
        let mut p = Progress::with_mode(3, 0, ProgressMode::Hidden);
        p.update(1, 0.1, 1e-3, &[]);
        p.println("hidden");
        p.finish();
        // A bar drawn to a non-terminal stderr draws nothing but must not fail.
        let mut p = Progress::with_mode(3, 1, ProgressMode::Bar);
        p.update(2, 0.1, 1e-3, &[("acc", 1.0)]);
        p.println("saved checkpoint-2");
        p.finish();
    }
}
