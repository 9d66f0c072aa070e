//! A chord's callback must take a `Vec` of the members' output as its first argument: one taking a
//! single value, or a `Vec` of another type, does not build.

use celeriac::canvas::{chord, group};

#[celeriac::task]
async fn count_words(text: String) -> Result<usize, std::io::Error> {
    Ok(text.split_whitespace().count())
}

#[celeriac::task]
async fn total(counts: Vec<u8>) -> Result<u64, std::io::Error> {
    Ok(counts.iter().map(|c| u64::from(*c)).sum())
}

#[celeriac::task]
async fn first(count: usize) -> Result<usize, std::io::Error> {
    Ok(count)
}

fn main() {
    let pages = || group(["a b", "c"].map(|page| count_words::s(page.to_owned())));
    let _wrong_item = chord(pages(), total::partial());
    let _not_a_vec = chord(pages(), first::partial());
}
