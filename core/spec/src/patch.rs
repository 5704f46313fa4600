//! `section!` declares a spec section once and derives two types from it:
//! the resolved struct (every field present, defaults applied) and its `…Patch`
//! (every field optional), which is what a single file holds. Patches merge field by field,
//! so a spec that `extends` another only writes the fields it changes.

macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident / $patch:ident as $written:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        // A field missing from a resolved spec takes its default: a run directory's `spec.ron`
        // written before the field existed still loads.
        #[serde(deny_unknown_fields, default, rename = $written)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        /// The fields of one file's section; `None` means "not written here". Written `(…)` or
        /// under the resolved struct's name (`Data(…)`), so a resolved spec is itself a spec file.
        #[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename = $written)]
        pub struct $patch {
            $( #[serde(default, deserialize_with = "crate::patch::present")] pub $field: Option<$ty>, )*
        }

        impl $patch {
            /// `over` wins wherever it sets a field.
            pub fn merge(self, over: $patch) -> $patch {
                $patch { $( $field: over.$field.or(self.$field), )* }
            }

            pub fn resolve(self) -> $name {
                let d = $name::default();
                $name { $( $field: self.$field.unwrap_or(d.$field), )* }
            }
        }
    };
}

pub(crate) use section;

/// A written field is always `Some`: its value is read as the field's own type, so a value that is
/// itself spelled `None` (`latent: None`) is not mistaken for "not written" by RON's implicit `Some`.
pub(crate) fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
