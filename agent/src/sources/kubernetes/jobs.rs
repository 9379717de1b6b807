//! Jobs and CronJobs under kube-state-metrics' names and labels (its
//! `docs/metrics/workload/job-metrics.md`, `cronjob-metrics.md`), each
//! series also carrying `service` = the pod template's `app` label.

use k8s_openapi::api::batch::v1::{CronJob, Job};

use super::cron::Schedule;
use super::state::{Cond, Out, Owner, Summary, app_label, b, secs};
use crate::model::MetricKind::Gauge;

/// The failure reasons kube-state-metrics reports in
/// `kube_job_status_failed{reason}`.
const JOB_FAILURE_REASONS: [&str; 3] = ["BackoffLimitExceeded", "DeadlineExceeded", "Evicted"];

/// A Job's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct JobSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) owners: Vec<Owner>,
    pub(super) succeeded: i32,
    pub(super) failed: i32,
    pub(super) active: i32,
    /// The Complete condition.
    pub(super) complete: Option<Cond>,
    /// The Failed condition and its reason.
    pub(super) failed_cond: Option<(Cond, String)>,
    pub(super) start_time: Option<i64>,
    pub(super) completion_time: Option<i64>,
}

impl Summary for JobSummary {
    type Object = Job;

    fn from_object(j: &Job) -> Self {
        let st = j.status.as_ref();
        let conds = st.and_then(|s| s.conditions.as_ref());
        let cond = |t: &str| conds.and_then(|cs| cs.iter().find(|c| c.type_ == t));
        JobSummary {
            name: j.metadata.name.clone().unwrap_or_default(),
            service: app_label(
                j.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ),
            owners: Owner::of(&j.metadata),
            succeeded: st.and_then(|s| s.succeeded).unwrap_or(0),
            failed: st.and_then(|s| s.failed).unwrap_or(0),
            active: st.and_then(|s| s.active).unwrap_or(0),
            complete: cond("Complete").and_then(|c| Cond::parse(&c.status)),
            failed_cond: cond("Failed").and_then(|c| Cond::parse(&c.status).map(|s| (s, c.reason.clone().unwrap_or_default()))),
            start_time: secs(st.and_then(|s| s.start_time.as_ref())),
            completion_time: secs(st.and_then(|s| s.completion_time.as_ref())),
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_job_info", Gauge, "Information about job.");
        out.meta("kube_job_owner", Gauge, "Information about the Job's owner.");
        out.meta(
            "kube_job_status_succeeded",
            Gauge,
            "The number of pods which reached Phase Succeeded.",
        );
        out.meta(
            "kube_job_status_failed",
            Gauge,
            "The number of pods which reached Phase Failed and the reason for failure.",
        );
        out.meta("kube_job_status_active", Gauge, "The number of actively running pods.");
        out.meta("kube_job_complete", Gauge, "The job has completed its execution.");
        out.meta("kube_job_failed", Gauge, "The job has failed its execution.");
        out.meta(
            "kube_job_status_start_time",
            Gauge,
            "StartTime represents time when the job was acknowledged by the Job Manager.",
        );
        out.meta(
            "kube_job_status_completion_time",
            Gauge,
            "CompletionTime represents time when the job was completed.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("job_name", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        let with = |k: &'static str, v: &'static str| -> Vec<(&str, &str)> {
            let mut l = base.to_vec();
            l.push((k, v));
            l
        };
        out.push("kube_job_info", &base, 1.0);
        Owner::render(&self.owners, "kube_job_owner", &base, out);
        out.push("kube_job_status_succeeded", &base, f64::from(self.succeeded));
        out.push("kube_job_status_active", &base, f64::from(self.active));
        // kube-state-metrics' shape: 0 without a reason while nothing failed;
        // then, with a Failed condition, one 0/1 series per known reason, and
        // the count under reason="" when the reason is none of them.
        if self.failed == 0 {
            out.push("kube_job_status_failed", &base, 0.0);
        } else {
            let mut known = false;
            if let Some((_, reason)) = &self.failed_cond {
                for r in JOB_FAILURE_REASONS {
                    known |= reason == r;
                    out.push("kube_job_status_failed", &with("reason", r), b(reason == r));
                }
            }
            if !known {
                out.push("kube_job_status_failed", &base, f64::from(self.failed));
            }
        }
        if let Some(c) = self.complete {
            for (s, name) in Cond::ALL {
                out.push("kube_job_complete", &with("condition", name), b(c == s));
            }
        }
        if let Some((c, _)) = &self.failed_cond {
            for (s, name) in Cond::ALL {
                out.push("kube_job_failed", &with("condition", name), b(*c == s));
            }
        }
        if let Some(t) = self.start_time {
            out.push("kube_job_status_start_time", &base, t as f64);
        }
        if let Some(t) = self.completion_time {
            out.push("kube_job_status_completion_time", &base, t as f64);
        }
    }
}

/// A CronJob's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct CronJobSummary {
    pub(super) name: String,
    pub(super) service: String,
    pub(super) schedule: String,
    pub(super) concurrency_policy: String,
    pub(super) timezone: String,
    pub(super) suspend: bool,
    pub(super) active: usize,
    pub(super) last_schedule: Option<i64>,
    pub(super) last_successful: Option<i64>,
    /// Computed when the summary is made (the schedule in UTC).
    pub(super) next_schedule: Option<i64>,
}

impl Summary for CronJobSummary {
    type Object = CronJob;

    fn from_object(c: &CronJob) -> Self {
        let spec = c.spec.as_ref();
        let st = c.status.as_ref();
        let schedule = spec.map(|s| s.schedule.clone()).unwrap_or_default();
        let tz = spec.and_then(|s| s.time_zone.clone());
        let suspend = spec.and_then(|s| s.suspend).unwrap_or(false);
        let last_schedule = secs(st.and_then(|s| s.last_schedule_time.as_ref()));
        let created = secs(c.metadata.creation_timestamp.as_ref());
        // Without a time zone the controller uses its own, UTC in practice.
        let utc = tz.as_deref().is_none_or(|z| matches!(z, "UTC" | "Etc/UTC"));
        let next_schedule = if suspend || !utc {
            None
        } else {
            Schedule::parse(&schedule).and_then(|s| s.next_after(last_schedule.or(created)?))
        };
        CronJobSummary {
            name: c.metadata.name.clone().unwrap_or_default(),
            service: app_label(
                spec.and_then(|s| s.job_template.spec.as_ref())
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ),
            schedule,
            concurrency_policy: spec.and_then(|s| s.concurrency_policy.clone()).unwrap_or_default(),
            timezone: tz.unwrap_or_else(|| "local".into()),
            suspend,
            active: st.and_then(|s| s.active.as_ref()).map_or(0, Vec::len),
            last_schedule,
            last_successful: secs(st.and_then(|s| s.last_successful_time.as_ref())),
            next_schedule,
        }
    }

    fn meta(out: &mut Out<'_>) {
        out.meta("kube_cronjob_info", Gauge, "Info about cronjob.");
        out.meta(
            "kube_cronjob_spec_suspend",
            Gauge,
            "Suspend flag tells the controller to suspend subsequent executions.",
        );
        out.meta(
            "kube_cronjob_status_active",
            Gauge,
            "Active holds pointers to currently running jobs.",
        );
        out.meta(
            "kube_cronjob_status_last_schedule_time",
            Gauge,
            "LastScheduleTime keeps information of when was the last time the job was successfully scheduled.",
        );
        out.meta(
            "kube_cronjob_status_last_successful_time",
            Gauge,
            "LastSuccessfulTime keeps information of when was the last time the job was completed successfully.",
        );
        out.meta(
            "kube_cronjob_next_schedule_time",
            Gauge,
            "Next time the cronjob should be scheduled. The time after lastScheduleTime, or after the cron job's creation time if it's never been scheduled. Use this to determine if the job is delayed.",
        );
    }

    fn render(&self, ns: &str, out: &mut Out<'_>) {
        let base = [
            ("namespace", ns),
            ("cronjob", self.name.as_str()),
            ("service", self.service.as_str()),
        ];
        let mut info = base.to_vec();
        info.extend([
            ("schedule", self.schedule.as_str()),
            ("concurrency_policy", self.concurrency_policy.as_str()),
            ("timezone", self.timezone.as_str()),
        ]);
        out.push("kube_cronjob_info", &info, 1.0);
        out.push("kube_cronjob_spec_suspend", &base, b(self.suspend));
        out.push("kube_cronjob_status_active", &base, self.active as f64);
        if let Some(t) = self.last_schedule {
            out.push("kube_cronjob_status_last_schedule_time", &base, t as f64);
        }
        if let Some(t) = self.last_successful {
            out.push("kube_cronjob_status_last_successful_time", &base, t as f64);
        }
        if let Some(t) = self.next_schedule {
            out.push("kube_cronjob_next_schedule_time", &base, t as f64);
        }
    }
}
