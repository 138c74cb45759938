//! The progress indicator shown while a command waits on mcpd: a spinner on
//! stderr whose message is the server's ready count and its instances'
//! states. It is drawn only when both stdout and stderr are terminals, so
//! scripts and pipes never see it. Owns drawing only; the caller feeds it
//! statuses and lifecycle events (a status snapshot is taken between
//! reconcile passes, so events show an instance's states sooner).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use mcp_lifecycle::{LifecycleEvent, LifecycleEventKind, ServerStatus};

/// A spinner, or nothing when output is not a terminal.
#[derive(Debug)]
pub(crate) struct WaitIndicator {
    bar: Option<ProgressBar>,
    shown: Mutex<Shown>,
}

/// What the spinner says: the counts and each instance's latest state.
#[derive(Debug, Default)]
struct Shown {
    counts: Option<String>,
    instances: BTreeMap<String, String>,
}

impl Shown {
    fn line(&self) -> Option<String> {
        if self.counts.is_none() && self.instances.is_empty() {
            return None;
        }
        let mut line = self.counts.clone().unwrap_or_else(|| "waiting".to_owned());
        if !self.instances.is_empty() {
            let states: Vec<String> = self
                .instances
                .iter()
                .map(|(id, state)| format!("{id} {state}"))
                .collect();
            line.push_str(": ");
            line.push_str(&states.join(", "));
        }
        Some(line)
    }
}

/// An instance's state as an event tells it: `starting` from
/// `pending -> starting`, the whole message for a failure.
fn state_in(event: &LifecycleEvent) -> Option<String> {
    match event.kind {
        LifecycleEventKind::InstanceCreated => Some("pending".to_owned()),
        LifecycleEventKind::InstancePhaseChanged => Some(
            event
                .message
                .split_once(" -> ")
                .map_or(event.message.as_str(), |(_, after)| after)
                .to_owned(),
        ),
        _ => None,
    }
}

/// Whether an indicator may be drawn: stdout and stderr are both terminals.
pub(crate) fn on_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// An instance's state from a status: its phase, and why when it failed.
fn instance_state(i: &mcp_lifecycle::InstanceStatus) -> String {
    match (&i.reason, i.phase.as_str()) {
        (Some(reason), "failed" | "unhealthy") => {
            format!("{} (attempt {}: {reason})", i.phase, i.attempt)
        }
        _ => i.phase.clone(),
    }
}

impl WaitIndicator {
    /// A spinner saying `what`, if on a terminal.
    pub(crate) fn start(what: &str) -> Self {
        if !on_terminal() {
            return WaitIndicator {
                bar: None,
                shown: Mutex::default(),
            };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        WaitIndicator {
            bar: Some(bar),
            shown: Mutex::default(),
        }
    }

    /// Whether it draws anything (callers skip polling when it does not).
    pub(crate) fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows the server's counts and the instances its status lists.
    pub(crate) fn show(&self, status: &ServerStatus) {
        let Some(bar) = &self.bar else { return };
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        shown.counts = Some(format!(
            "{} {}/{} ready ({})",
            status.name,
            status.ready,
            status.desired,
            status.phase.name()
        ));
        if !status.instances.is_empty() {
            shown.instances = status
                .instances
                .iter()
                .map(|i| (i.id.to_string(), instance_state(i)))
                .collect();
        }
        if let Some(line) = shown.line() {
            bar.set_message(line);
        }
    }

    /// Updates an instance's state from an event about it.
    pub(crate) fn observe(&self, event: &LifecycleEvent) {
        let Some(bar) = &self.bar else { return };
        let Some(id) = &event.instance else { return };
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        if event.kind == LifecycleEventKind::InstanceRemoved {
            shown.instances.remove(id.as_str());
        } else if let Some(state) = state_in(event) {
            shown.instances.insert(id.to_string(), state);
        }
        if let Some(line) = shown.line() {
            bar.set_message(line);
        }
    }

    /// Removes the spinner (the command prints its result after).
    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_lifecycle::{InstanceId, Timestamp};

    fn event(kind: LifecycleEventKind, message: &str) -> LifecycleEvent {
        LifecycleEvent {
            at: Timestamp::EPOCH,
            server: "s".into(),
            instance: Some(InstanceId::from_raw("s-1".to_owned())),
            kind,
            message: message.into(),
        }
    }

    #[test]
    fn events_tell_an_instance_state() {
        let created = event(LifecycleEventKind::InstanceCreated, "created instance s-1");
        assert_eq!(state_in(&created).as_deref(), Some("pending"));
        let moved = event(
            LifecycleEventKind::InstancePhaseChanged,
            "pending -> starting",
        );
        assert_eq!(state_in(&moved).as_deref(), Some("starting"));
        let failed = event(
            LifecycleEventKind::InstancePhaseChanged,
            "failed (attempt 2): exited 1; retrying at T",
        );
        assert_eq!(
            state_in(&failed).as_deref(),
            Some("failed (attempt 2): exited 1; retrying at T")
        );
        assert_eq!(state_in(&event(LifecycleEventKind::Applied, "x")), None);
    }

    #[test]
    fn the_line_shows_counts_then_instances() {
        let mut shown = Shown::default();
        assert_eq!(shown.line(), None);
        shown.counts = Some("s 0/2 ready (starting)".into());
        shown.instances.insert("s-1".into(), "ready".into());
        shown.instances.insert("s-2".into(), "starting".into());
        assert_eq!(
            shown.line().as_deref(),
            Some("s 0/2 ready (starting): s-1 ready, s-2 starting")
        );
    }
}
