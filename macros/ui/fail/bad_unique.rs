// Unique-task options that cannot work: each is one error, naming the task option and what to write.

#[celeriac::task(unique_for = "a minute")]
async fn bad_duration(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(unique_for = "60s", unique_key = "phone")]
async fn unknown_argument(mobile: String, code: String) {
    let _ = (mobile, code);
}

#[celeriac::task(unique_for = "60s", unique_key = ["mobile", "mobile"])]
async fn named_twice(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(unique_key = "mobile")]
async fn key_without_window(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(unique_for = "60s", unique_until = "done")]
async fn bad_until(mobile: String) {
    let _ = mobile;
}

fn main() {}
