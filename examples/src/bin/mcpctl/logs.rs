//! `logs NAME [--instance ID] [--tail N]`: the last lines of a server's
//! instances. With one instance the lines print as they are; with several,
//! each line is prefixed with `[INSTANCE]` (kubectl's `--prefix`).

use crate::Context;
use crate::cli::LogsArgs;
use crate::output;

/// Runs `logs`.
pub(crate) async fn run(ctx: &Context, args: &LogsArgs) -> anyhow::Result<()> {
    let logs = ctx
        .client
        .logs(&args.name, args.instance.as_deref(), args.tail)
        .await?;
    if let Some(format) = ctx.output {
        output::emit(&output::structured(&logs, format)?)?;
        return Ok(());
    }
    let prefixed = logs.instances.len() > 1;
    let mut text = String::new();
    for instance in &logs.instances {
        for line in &instance.lines {
            if prefixed {
                text.push_str(&format!("[{}] ", instance.instance));
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    output::emit(&text)?;
    Ok(())
}
