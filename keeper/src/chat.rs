//! `rbee-keeper chat`: a conversation with a model. Each turn is one `infer` job with
//! the whole history as chat messages, so the worker renders it with the model's own
//! chat template; replies stream as they are generated.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use console::style;
use rbee_protocol::{ChatMessage, InferenceRequest, JobEvent, OperationResult};

use crate::Settings;
use crate::cli::ChatArgs;

/// What the operator can type instead of a message.
const HELP: &str = "/exit (or Ctrl-D) leaves, /reset forgets the conversation";

pub async fn run(settings: &Settings, args: ChatArgs) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    let interactive = std::io::stdin().is_terminal();
    let opening: Vec<ChatMessage> = args
        .system
        .clone()
        .map(|content| ChatMessage {
            role: "system".into(),
            content,
        })
        .into_iter()
        .collect();
    let mut history = opening.clone();
    if interactive {
        eprintln!(
            "{}",
            style(format!("chatting with {}; {HELP}", args.options.model())).dim()
        );
    }
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    // Reading stdin blocks; a thread of its own keeps the runtime free.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut failed_turns = 0u32;
    loop {
        if interactive {
            eprint!("{} ", style(">").green().bold());
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.recv().await else {
            break;
        };
        let message = line.trim();
        match message {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = opening.clone();
                eprintln!("{}", style("(conversation forgotten)").dim());
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: message.to_owned(),
        });
        let request = InferenceRequest {
            messages: Some(history.clone()),
            ..args.options.request()
        };
        let submitted = client.submit(&args.options.operation(request)).await?;
        let mut reply = String::new();
        let json = settings.json;
        let terminal = client
            .follow(&submitted.job_id, |event| {
                if json {
                    println!("{}", serde_json::to_string(event).unwrap_or_default());
                    if let JobEvent::Token { t, .. } = event {
                        reply.push_str(t);
                    }
                    return;
                }
                match event {
                    JobEvent::Token { t, .. } => {
                        reply.push_str(t);
                        print!("{t}");
                        let _ = std::io::stdout().flush();
                    }
                    JobEvent::Result {
                        result: OperationResult::Inference(stats),
                        ..
                    } => {
                        println!();
                        eprintln!("{}", style(crate::worker_table::stats_line(stats)).dim());
                    }
                    _ => {}
                }
            })
            .await?;
        match terminal {
            JobEvent::Done => history.push(ChatMessage {
                role: "assistant".into(),
                content: reply,
            }),
            JobEvent::Error(error) => {
                failed_turns += 1;
                history.pop();
                eprintln!(
                    "{} {} ({})",
                    style("error:").red().bold(),
                    error.message,
                    error.code
                );
                if let Some(hint) = &error.hint {
                    eprintln!("{} {hint}", style("hint:").yellow());
                }
            }
            _ => {
                history.pop();
                break;
            }
        }
    }
    Ok(if failed_turns == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
