//! Workflows that must build: chains with partial and full signatures, callbacks, groups of
//! different tasks with one output type, a chord whose callback has more arguments.

use celeriac::canvas::{Group, TaskFailure, chord, group};

#[celeriac::task]
async fn add(a: i64, b: i64) -> Result<i64, std::io::Error> {
    Ok(a + b)
}

#[celeriac::task]
async fn negate(n: i64) -> Result<i64, std::io::Error> {
    Ok(-n)
}

#[celeriac::task]
async fn store(n: i64, key: String, ttl_seconds: u32) {
    println!("{key} = {n} for {ttl_seconds} s");
}

#[celeriac::task]
async fn report(parts: Vec<i64>, title: String) -> Result<String, std::io::Error> {
    Ok(format!("{title}: {parts:?}"))
}

#[celeriac::task]
async fn alert(failure: TaskFailure) {
    eprintln!("{} failed: {}", failure.task, failure.error);
}

fn main() {
    let chain = add::s(2, 3)
        .then(negate::partial())
        .then(add::s(1, 1))
        .then(store::partial("sum".to_owned(), 60).queue("storage"));
    let _: celeriac::canvas::Chain<()> = chain;

    let _linked = add::s(1, 2)
        .link(negate::partial())
        .link_error(alert::partial());

    let mixed = Group::new().push(add::s(1, 2)).push(negate::s(3));
    let _chord = chord(mixed, report::partial("totals".to_owned())).link_error(alert::partial());
    let _plain = group((0..3).map(negate::s));
}
