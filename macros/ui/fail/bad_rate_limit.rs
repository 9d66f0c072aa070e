// Rate-limit options that cannot work: each is one error, naming the task option and what to write.

#[celeriac::task(rate_limit = "5/s", rate_limit_scope = "everywhere")]
async fn bad_scope(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(rate_limit_key = "mobile")]
async fn key_without_limit(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(rate_limit = "5/h", rate_limit_key = "phone")]
async fn unknown_argument(mobile: String) {
    let _ = mobile;
}

#[celeriac::task(rate_limit = "5/h", rate_limit_scope = "worker", rate_limit_key = "mobile")]
async fn keyed_per_worker(mobile: String) {
    let _ = mobile;
}

fn main() {}
