pub mod dump;
pub mod human;
