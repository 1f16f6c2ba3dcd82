//! `shoal token show|rotate agent|controller` (admin credentials needed).

use anyhow::Context as _;
use shoal_proto::pb::TokenRequest;

use super::Ctx;
use crate::args::TokenCommand;

pub async fn run(cmd: TokenCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    let (role, rotate) = match cmd {
        TokenCommand::Show { role } => (role, false),
        TokenCommand::Rotate { role } => (role, true),
    };
    let req = TokenRequest {
        role: role.as_str().to_string(),
    };
    let token = ctx
        .client
        .call_pki(|mut c| {
            let req = req.clone();
            async move {
                if rotate {
                    c.rotate_token(req).await
                } else {
                    c.show_token(req).await
                }
            }
        })
        .await
        .with_context(|| {
            format!(
                "{} the {} token",
                if rotate { "rotate" } else { "show" },
                role.as_str()
            )
        })?
        .token;
    println!("{token}");
    Ok(())
}
