//! Learning-rate schedule: linear warm-up, then cosine or linear decay to `min_lr`, or constant.
//!
//! The schedule is a pure function of the optimizer step, so a resumed run needs only the step
//! number to continue on the same curve (no scheduler state goes into a checkpoint). Steps are
//! counted from 1: step `s` is the `s`-th optimizer update. During warm-up the rate rises as
//! `peak * s / warmup_steps`, so the first update already moves the weights (the DPO reference
//! code does the same) and step `warmup_steps` is at the peak. After warm-up, with progress
//! `p = (s - warmup) / (total - warmup)` in (0, 1]:
//!
//! - cosine: `min + (peak - min) * (1 + cos(pi p)) / 2`
//! - linear: `min + (peak - min) * (1 - p)`
//! - constant: `peak`
//!
//! so the last step (`s = total`) is at `min = peak * min_lr_ratio`. Steps past the end stay there.

use crate::config::{Decay, ScheduleConfig};

/// A learning-rate curve over a run of known length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The rate at the end of warm-up.
    pub peak_lr: f64,
    /// The rate the decay ends at (`peak_lr * min_lr_ratio`).
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// The shape after warm-up.
    pub decay: Decay,
}

impl LrSchedule {
    /// The schedule of a run of `total_steps` optimizer steps peaking at `peak_lr`.
    pub fn new(peak_lr: f64, config: &ScheduleConfig, total_steps: u64) -> Self {
        LrSchedule {
            peak_lr,
            min_lr: peak_lr * config.min_lr_ratio,
            warmup_steps: config.warmup_steps,
            total_steps,
            decay: config.decay,
        }
    }

    /// The learning rate of optimizer step `step` (1-based; step 0 is treated as step 1).
    pub fn lr(&self, step: u64) -> f64 {
        let step = step.max(1);
        if step <= self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        if self.decay == Decay::Constant || decay_steps == 0 {
            return self.peak_lr;
        }
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let span = self.peak_lr - self.min_lr;
        match self.decay {
            Decay::Cosine => {
                self.min_lr + span * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Linear => self.min_lr + span * (1.0 - progress),
            Decay::Constant => self.peak_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(warmup: u64, decay: Decay, min_ratio: f64, total: u64) -> LrSchedule {
        let config = ScheduleConfig {
            warmup_steps: warmup,
            decay,
            min_lr_ratio: min_ratio,
        };
        LrSchedule::new(1.0, &config, total)
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    #[test]
    fn warmup_is_linear_from_the_first_step() {
        let s = schedule(4, Decay::Constant, 0.0, 10);
        let got: Vec<f64> = (1..=5).map(|i| s.lr(i)).collect();
        assert_eq!(got, vec![0.25, 0.5, 0.75, 1.0, 1.0]);
        assert_eq!(s.lr(0), 0.25, "step 0 is treated as step 1");
        assert_eq!(s.lr(1000), 1.0);
    }

    #[test]
    fn linear_decay_reaches_min_at_the_last_step() {
        // warm-up 2, then 8 decay steps from 1.0 to 0.2
        let s = schedule(2, Decay::Linear, 0.2, 10);
        assert_close(s.lr(2), 1.0);
        assert_close(s.lr(3), 0.2 + 0.8 * (1.0 - 1.0 / 8.0)); // 0.9
        assert_close(s.lr(6), 0.6);
        assert_close(s.lr(10), 0.2);
        assert_close(s.lr(11), 0.2);
    }

    #[test]
    fn cosine_decay_exact_values() {
        // no warm-up, 4 steps: progress 1/4, 1/2, 3/4, 1
        let s = schedule(0, Decay::Cosine, 0.0, 4);
        assert_close(s.lr(1), 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)); // 0.853553...
        assert_close(s.lr(2), 0.5);
        assert_close(s.lr(3), 0.5 * (1.0 - std::f64::consts::FRAC_1_SQRT_2));
        assert_close(s.lr(4), 0.0);
        let s = schedule(0, Decay::Cosine, 0.1, 2);
        assert_close(s.lr(1), 0.55);
        assert_close(s.lr(2), 0.1);
    }

    #[test]
    fn scales_with_peak_and_handles_degenerate_lengths() {
        let config = ScheduleConfig {
            warmup_steps: 10,
            decay: Decay::Cosine,
            min_lr_ratio: 0.0,
        };
        let s = LrSchedule::new(3e-4, &config, 5);
        assert_close(s.lr(5), 1.5e-4);
        assert_close(s.lr(20), 3e-4);
        let s = schedule(0, Decay::Linear, 0.0, 0);
        assert_eq!(s.lr(1), 1.0);
    }
}
