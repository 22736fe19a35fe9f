//! The `flowstage` command-line tool (work in progress).

fn main() -> anyhow::Result<()> {
    println!("flowstage {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
