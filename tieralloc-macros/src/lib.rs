//! `#[tier(...)]`: runs a function's body inside a tieralloc tier scope, so every allocation
//! the body makes (directly or in the functions it calls, on this thread) prefers that tier.
//! Use it through tieralloc's `macros` feature as `#[tieralloc::tier(device = 0)]` (this crate
//! cannot run the example itself: it does not depend on tieralloc; `alloc-tests/macros.rs` and
//! tieralloc's own docs run it):
//!
//! ```text
//! #[tieralloc::tier(device = 0)]
//! fn build_table() -> Vec<u64> {
//!     vec![0; 1 << 20] // created on device 0
//! }
//! ```
//!
//! The expansion is `{ let _scope = ::tieralloc::tier_scope(TIER); BODY }`: the scope ends
//! when the function returns, after the return value is built. It is written without `syn` to
//! keep the dependency tree empty, so it accepts exactly `device = N` and `host`.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

/// Makes the allocations of the annotated function's body prefer a tier:
/// `#[tier(device = N)]` or `#[tier(host)]`. See the crate docs.
#[proc_macro_attribute]
pub fn tier(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr, item) {
        Ok(ts) => ts,
        Err(msg) => format!("::core::compile_error!({msg:?});").parse().unwrap(),
    }
}

/// The tier expression named by the attribute's arguments.
fn tier_expr(attr: TokenStream) -> Result<String, String> {
    let tokens: Vec<TokenTree> = attr.into_iter().collect();
    match tokens.as_slice() {
        [TokenTree::Ident(i)] if i.to_string() == "host" => Ok("::tieralloc::Tier::Host".into()),
        [TokenTree::Ident(i), TokenTree::Punct(eq), TokenTree::Literal(n)]
            if i.to_string() == "device" && eq.as_char() == '=' =>
        {
            let n = n.to_string();
            let digits = n.trim_end_matches("u16");
            match digits.parse::<u16>() {
                Ok(d) => Ok(format!("::tieralloc::Tier::Device({d})")),
                Err(_) => Err(format!(
                    "#[tieralloc::tier]: `{n}` is not a device number (0..=65535)"
                )),
            }
        }
        _ => Err("#[tieralloc::tier] takes `device = N` or `host`, \
                  e.g. #[tieralloc::tier(device = 0)]"
            .into()),
    }
}

fn expand(attr: TokenStream, item: TokenStream) -> Result<TokenStream, String> {
    let tier = tier_expr(attr)?;
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let is_fn = tokens
        .iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "fn"));
    if !is_fn {
        return Err("#[tieralloc::tier] goes on a function".into());
    }
    if tokens
        .iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "async"))
    {
        return Err(
            "#[tieralloc::tier] cannot annotate an async fn: a tier scope belongs to \
                    a thread, and a future may move between threads; open a scope with \
                    tieralloc::with_tier inside it instead"
                .into(),
        );
    }
    let Some(TokenTree::Group(body)) = tokens.last() else {
        return Err("#[tieralloc::tier] needs a function with a body".into());
    };
    if body.delimiter() != Delimiter::Brace {
        return Err("#[tieralloc::tier] needs a function with a body".into());
    }
    let scope: TokenStream =
        format!("let __tieralloc_tier_scope = ::tieralloc::tier_scope({tier});")
            .parse()
            .map_err(|_| "internal error building the scope".to_string())?;
    let mut inner = scope;
    inner.extend([TokenTree::Group(body.clone())]);
    let mut new_body = Group::new(Delimiter::Brace, inner);
    new_body.set_span(body.span());
    *tokens.last_mut().expect("checked above") = TokenTree::Group(new_body);
    Ok(tokens.into_iter().collect())
}
