//! Without `#[global_allocator]`, the API says so instead of returning
//! silently empty figures.

#[test]
fn snapshot_and_measure_refuse_to_lie_without_the_tracker() {
    assert!(!alloc_track::is_installed());
    let snapshot = std::panic::catch_unwind(alloc_track::snapshot);
    let message = *snapshot.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("#[global_allocator]"), "{message}");
    let measured = std::panic::catch_unwind(|| alloc_track::measure(|| Box::new(1)));
    assert!(measured.is_err());
}
