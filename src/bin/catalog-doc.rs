//! Prints `docs/controls.md`, the control catalog generated from `src/catalog.rs`.

fn main() {
    print!("{}", onus::catalog::controls_markdown());
}
