//! A chain whose next task's first argument is not the previous task's output does not build: one
//! error, at the mismatched step, naming both types.

#[celeriac::task]
async fn add(a: i64, b: i64) -> Result<i64, std::io::Error> {
    Ok(a + b)
}

#[celeriac::task]
async fn shout(text: String) -> Result<String, std::io::Error> {
    Ok(text.to_uppercase())
}

fn main() {
    let _chain = add::s(2, 3).then(shout::partial());
}
