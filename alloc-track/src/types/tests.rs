use super::*;

fn frame(function: &str, std: bool) -> Frame {
    Frame {
        function: function.to_string(),
        file: Some(if std {
            "/rustc/abc/library/alloc/src/x.rs".to_string()
        } else {
            "src/main.rs".to_string()
        }),
        line: Some(1),
        column: None,
    }
}

fn type_of(std_frames: &[&str]) -> String {
    let mut frames: Vec<Frame> = std_frames.iter().map(|f| frame(f, true)).collect();
    frames.push(frame("app::load", false));
    allocated_type(&frames).to_string()
}

#[test]
fn v0_names_tell_the_element_type() {
    assert_eq!(
        type_of(&[
            "alloc::boxed::box_new_uninit",
            "<alloc::boxed::Box<app::Node>>::new"
        ]),
        "Box<app::Node>"
    );
    assert_eq!(
        type_of(&[
            "<alloc::vec::Vec<app::Widget>>::push_mut",
            "<alloc::vec::Vec<app::Widget>>::push"
        ]),
        "Vec<app::Widget>"
    );
    assert_eq!(
        type_of(&[
            "alloc::boxed::box_new_uninit",
            "<alloc::boxed::Box<alloc::sync::ArcInner<app::Session>>>::new",
            "<alloc::sync::Arc<app::Session>>::new",
        ]),
        "Arc<app::Session>"
    );
    assert_eq!(
        type_of(&[
            "<alloc::boxed::Box<alloc::rc::RcInner<app::Session>>>::new",
            "<alloc::rc::Rc<app::Session>>::new",
        ]),
        "Rc<app::Session>"
    );
    assert_eq!(
        type_of(&[
            "hashbrown::raw::alloc::inner::do_alloc",
            "<hashbrown::raw::RawTableInner>::reserve_rehash_inner::<alloc::alloc::Global>",
            "<hashbrown::raw::RawTable<(u64, app::Item)>>::reserve_rehash::<hashbrown::map::make_hasher<u64, app::Item, std::hash::random::RandomState>::{closure#0}>",
            "<std::collections::hash::map::HashMap<u64, app::Item>>::insert",
        ]),
        "HashMap<u64, app::Item>"
    );
    assert_eq!(
        type_of(&["<hashbrown::raw::RawTable<(alloc::string::String, ())>>::reserve_rehash::<x>"]),
        "HashMap<String>"
    );
    assert_eq!(
        type_of(&[
            "<alloc::boxed::Box<alloc::collections::btree::node::LeafNode<u64, app::Item>>>::try_new_uninit_in",
            "<alloc::collections::btree::map::BTreeMap<u64, app::Item>>::insert",
        ]),
        "BTreeMap<u64, app::Item>"
    );
    assert_eq!(
        type_of(&[
            "<alloc::vec::Vec<u8>>::with_capacity_in",
            "<alloc::string::String>::with_capacity",
            "alloc::fmt::format::format_inner",
        ]),
        "String"
    );
    assert_eq!(
        type_of(&["<alloc::vec::Vec<alloc::vec::Vec<app::Widget>, alloc::alloc::Global>>::with_capacity_in"]),
        "Vec<Vec<app::Widget>>"
    );
    // A plain `Vec<u8>` stays one.
    assert_eq!(type_of(&["<alloc::vec::Vec<u8>>::reserve"]), "Vec<u8>");
}

#[test]
fn legacy_names_tell_the_container_only() {
    assert_eq!(
        type_of(&["alloc::boxed::box_new_uninit", "alloc::boxed::Box<T>::new"]),
        "[unknown Box: allocated in app::load]"
    );
    assert_eq!(
        type_of(&["alloc::boxed::Box<T>::new", "alloc::sync::Arc<T>::new"]),
        "[unknown Arc: allocated in app::load]"
    );
    assert_eq!(
        type_of(&[
            "alloc::vec::Vec<T,A>::append_elements",
            "alloc::string::String::push_str"
        ]),
        "String"
    );
    assert_eq!(type_of(&[]), "[unknown: allocated in app::load]");
    let known = allocated_type(&[frame("<alloc::boxed::Box<app::Node>>::new", true)]);
    assert!(known.is_known());
    assert!(!allocated_type(&[frame("alloc::boxed::Box<T>::new", true)]).is_known());
}

#[test]
fn frames_outside_the_library_are_not_read() {
    // A program's own `impl` of a trait for `Vec<T>` lives in its file.
    let frames = [
        frame("<alloc::vec::Vec<u32> as app::Pool>::fill", false),
        frame("app::main", false),
    ];
    let ty = allocated_type(&frames);
    assert_eq!(ty.container, None);
    assert_eq!(
        ty.allocated_in.as_deref(),
        Some("<alloc::vec::Vec<u32> as app::Pool>::fill")
    );
}
