//! `App::builder().autodiscover()` finds every `#[task]` linked into the binary (Celery's
//! `autodiscover_tasks`), including tasks in other modules and with a renamed crate path.

use celeriac::App;

mod sms {
    #[celeriac::task(name = "ccp_send_sms_code", max_retries = 3, retry_backoff = 3)]
    pub(crate) async fn ccp_send_sms_code(
        mobile: String,
        code: String,
    ) -> Result<(), std::io::Error> {
        let _ = (mobile, code);
        Ok(())
    }
}

mod renamed {
    use celeriac as queueing;

    #[queueing::task(crate = "queueing", name = "report")]
    pub(crate) fn build_report(month: u8) -> Result<String, std::fmt::Error> {
        Ok(format!("report for {month}"))
    }
}

#[test]
fn autodiscover_registers_every_linked_task() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .autodiscover()
        .build()
        .unwrap();
    let mut names: Vec<_> = app.task_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["ccp_send_sms_code", "report"]);
}

#[test]
fn without_autodiscover_only_explicit_registrations_count() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<sms::ccp_send_sms_code>()
        .build()
        .unwrap();
    assert_eq!(app.task_names().collect::<Vec<_>>(), ["ccp_send_sms_code"]);
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .build()
        .unwrap();
    assert_eq!(app.task_names().count(), 0);
}

#[test]
fn the_task_function_stays_callable() {
    assert_eq!(renamed::build_report(3).unwrap(), "report for 3");
    let options = <sms::ccp_send_sms_code as celeriac::Task>::options();
    assert_eq!(options.retry.retry_limit(), Some(3));
    // Explicit registration of an autodiscovered task is harmless.
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<sms::ccp_send_sms_code>()
        .autodiscover()
        .build()
        .unwrap();
    assert_eq!(app.task_names().count(), 2);
}
