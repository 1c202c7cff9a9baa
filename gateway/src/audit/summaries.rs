//! The audit log's periodic summaries: refusal records left out over their budget
//! (`refusals_suppressed`) and escalations against abusive callers (`abuse_summary`).

use super::*;

impl AuditTrail {
    /// Counts an escalation against an abusive caller for the interval's `abuse_summary`.
    pub(crate) fn escalated(&self, offender: Offender<'_>, what: Escalated) {
        self.escalations.note(offender, what);
    }

    /// Ends the refusal budget's interval: writes its `refusals_suppressed` record, if anything
    /// was suppressed, and its `abuse_summary`, if anything was escalated, and waits for them
    /// to be durable.
    pub(crate) async fn summarise_refusals(&self) {
        let now = SystemTime::now();
        let window = self.refusal_budget.roll(now);
        if let Some(summary) = window.summary() {
            let written = self.handle.append_durable_async(summary.clone()).await;
            self.summary_written(window, &summary, written);
        }
        let window = self.escalations.roll(now);
        if let Some(summary) = window.summary() {
            let written = self.handle.append_durable_async(summary.clone()).await;
            self.abuse_written(window, &summary, written);
        }
    }

    /// As [`AuditTrail::summary_written`], for an `abuse_summary`.
    pub(super) fn abuse_written(
        &self,
        window: escalations::Window,
        summary: &AbuseSummary,
        written: Result<Durable, AuditError>,
    ) {
        let sum = |f: fn(&ListenerAbuse) -> u64| summary.listeners.iter().map(f).sum::<u64>();
        let (slowed, closed) = (sum(|l| l.slowed), sum(|l| l.closed));
        let refused = sum(|l| l.source_rate + l.identity_rate);
        match written {
            Ok(_) => tracing::info!(
                abuse.slowed = slowed,
                abuse.closed = closed,
                abuse.rate_refused = refused,
                "escalations against abusive callers summarised in the audit log"
            ),
            Err(e @ AuditError::Timeout(_)) => {
                tracing::error!(error = %e, abuse.slowed = slowed, abuse.closed = closed, abuse.rate_refused = refused, "abuse summary not confirmed durable");
            }
            Err(e) => {
                tracing::error!(error = %e, abuse.slowed = slowed, abuse.closed = closed, abuse.rate_refused = refused, "abuse summary not written; its counts go out with the next one");
                self.escalations.restore(window);
            }
        }
    }

    /// Counts that could not be written go back into the budget's interval, to go out with
    /// the next summary (unless the record may yet be written: a timeout).
    pub(super) fn summary_written(
        &self,
        window: Window,
        summary: &SuppressedRefusals,
        written: Result<Durable, AuditError>,
    ) {
        let top = summary.sources.first();
        match written {
            Ok(_) => tracing::warn!(
                audit.suppressed = summary.suppressed,
                audit.top_source = top.map_or("", |s| s.source.as_str()),
                audit.top_suppressed = top.map_or(0, |s| s.suppressed),
                "refusal records over their per-source budget were counted, not written in detail"
            ),
            Err(e @ AuditError::Timeout(_)) => {
                tracing::error!(error = %e, audit.suppressed = summary.suppressed, "summary of suppressed refusal records not confirmed durable");
            }
            Err(e) => {
                tracing::error!(error = %e, audit.suppressed = summary.suppressed, "summary of suppressed refusal records not written; its counts go out with the next one");
                self.refusal_budget.restore(window);
            }
        }
    }
}
