//! rbee-keeper: the operator's CLI. Every cluster operation is submitted to the queen
//! as a job and its event stream rendered live; the queen's own lifecycle on this
//! machine is handled here.

pub mod chat;
pub mod cli;
pub mod cluster_view;
pub mod hive_wizard;
pub mod job_client;
pub mod model_table;
pub mod playbook_view;
pub mod prompt;
pub mod queen_lifecycle;
pub mod render;
pub mod table;
pub mod worker_table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rbee_config::Config;

use rbee_protocol::{ChatMessage, ErrorCode, InferenceRequest, JobEvent, Operation, PromptFormat};

use cli::{
    Cli, Command, HiveCommand, InventoryCommand, JobCommand, ModelCommand, QueenCommand,
    WorkerCommand,
};
use job_client::QueenClient;
use render::Renderer;

/// Exit code of a job that ended with `cancelled` (as a shell reports SIGINT).
const EXIT_CANCELLED: u8 = 130;

pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RBEE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// What every command needs: configuration and the output mode.
pub struct Settings {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub queen_url: String,
    pub json: bool,
    pub yes: bool,
}

impl Settings {
    pub fn client(&self) -> anyhow::Result<QueenClient> {
        QueenClient::new(&self.queen_url, self.config.queen.api_token.clone())
    }

    /// Prints a human line, or the JSON form with `--json`.
    pub fn say(&self, human: &str, json: serde_json::Value) {
        if self.json {
            println!("{json}");
        } else {
            println!("{human}");
        }
    }

    /// The port named by an explicit --queen-url, so `queen start` listens there.
    fn url_port(&self) -> Option<u16> {
        let rest = self.queen_url.split("://").nth(1)?;
        let authority = rest.split('/').next()?;
        authority.rsplit_once(':')?.1.parse().ok()
    }
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is no error.
fn print_all(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Neither needs a configuration or a queen.
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "rbee-keeper", &mut script);
            return print_all(&script);
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .context("rendering the man page")?;
            return print_all(&page);
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref()).context("loading the configuration")?;
    let queen_url = cli.queen_url.clone().unwrap_or_else(|| config.queen_url());
    let settings = Settings {
        config,
        config_path: cli.config.clone(),
        queen_url,
        json: cli.json,
        yes: cli.yes,
    };
    let operation = match cli.command {
        Command::Queen(command) => return queen(&settings, command).await,
        Command::Job(command) => return job(&settings, command).await,
        Command::Status => Operation::Status,
        Command::Hive(HiveCommand::Add(args)) => return hive_wizard::add(&settings, args).await,
        Command::Hive(command) => hive(&settings, command)?,
        Command::Model(command) => model(&settings, command)?,
        Command::Worker(command) => worker(command),
        Command::Infer(mut args) => {
            resolve_model(&settings, &mut args.options).await?;
            let chat = args.chat || args.system.is_some();
            let request = if chat {
                let mut messages: Vec<ChatMessage> = args
                    .system
                    .map(|content| ChatMessage {
                        role: "system".into(),
                        content,
                    })
                    .into_iter()
                    .collect();
                messages.push(ChatMessage {
                    role: "user".into(),
                    content: args.prompt,
                });
                InferenceRequest {
                    messages: Some(messages),
                    ..args.options.request()
                }
            } else {
                InferenceRequest {
                    prompt: Some(args.prompt),
                    prompt_format: if args.raw {
                        PromptFormat::Raw
                    } else {
                        PromptFormat::Chat
                    },
                    ..args.options.request()
                }
            };
            args.options.operation(request)
        }
        Command::Chat(mut args) => {
            resolve_model(&settings, &mut args.options).await?;
            return chat::run(&settings, args).await;
        }
        Command::Play { file, check, limit } => {
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("reading the playbook {}", file.display()))?;
            // Checked here too, so a typo is reported before anything is submitted.
            rbee_config::Playbook::parse(&file, &content).map_err(|e| {
                let hint = e.hint();
                anyhow::anyhow!("{e}\nhint: {hint}")
            })?;
            let dir = std::fs::canonicalize(&file)
                .ok()
                .and_then(|f| f.parent().map(|d| d.display().to_string()));
            Operation::PlaybookRun {
                name: file.display().to_string(),
                content,
                check,
                limit,
                dir,
            }
        }
        Command::Inventory(InventoryCommand::Graph) => return inventory_graph(&settings),
        Command::Inventory(InventoryCommand::Import { file, output }) => {
            return inventory_import(&settings, &file, output.as_deref());
        }
        Command::Inventory(InventoryCommand::List) => Operation::InventoryList,
        Command::Inventory(InventoryCommand::Reload) => Operation::InventoryReload,
        Command::Inventory(InventoryCommand::Check { target }) => Operation::InventoryCheck {
            hive_id: target.pattern()?,
        },
        Command::Completions { .. } | Command::Man => unreachable!("answered above"),
    };
    run_job(&settings, &operation).await
}

/// Draws the inventory file's groups; no queen needed.
fn inventory_graph(settings: &Settings) -> anyhow::Result<ExitCode> {
    let path = settings.config.inventory_path();
    let inventory = rbee_config::Inventory::load(&path, true).map_err(|e| {
        let hint = e.hint().unwrap_or_else(|| {
            "create it (see inventory/example.toml) or point `inventory` in config.toml at it"
                .to_owned()
        });
        anyhow::anyhow!("{e}\nhint: {hint}")
    })?;
    let groups: serde_json::Value = inventory
        .groups
        .iter()
        .map(|(name, members)| (name.clone(), serde_json::json!(members)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    settings.say(
        inventory.graph().trim_end(),
        serde_json::json!({"groups": groups, "children": inventory.children}),
    );
    Ok(ExitCode::SUCCESS)
}

/// Converts an Ansible inventory; the result is checked as an rbee inventory before it
/// is printed or written.
fn inventory_import(
    settings: &Settings,
    file: &std::path::Path,
    output: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the Ansible inventory {}", file.display()))?;
    let converted = rbee_config::ansible::import(file, &text).map_err(|e| {
        anyhow::anyhow!("{e}\nhint: rbee reads Ansible's INI and YAML inventory formats")
    })?;
    let check = output.unwrap_or(std::path::Path::new("imported.toml"));
    let inventory = rbee_config::Inventory::parse(check, &converted)
        .map_err(|e| anyhow::anyhow!("the converted inventory is not valid: {e}"))?;
    let Some(output) = output else {
        print!("{converted}");
        return Ok(ExitCode::SUCCESS);
    };
    if output.exists()
        && !prompt::confirm(&format!("Overwrite {}?", output.display()), settings.yes)?
    {
        anyhow::bail!("not confirmed; {} is unchanged", output.display());
    }
    let partial = output.with_extension("toml.partial");
    std::fs::write(&partial, &converted)
        .and_then(|()| std::fs::rename(&partial, output))
        .with_context(|| format!("writing {}", output.display()))?;
    settings.say(
        &format!(
            "wrote {} with {} hive(s) and {} group(s)",
            output.display(),
            inventory.hives.len(),
            inventory.groups.len()
        ),
        serde_json::json!({"path": output, "hives": inventory.hives.len(), "groups": inventory.groups.len()}),
    );
    Ok(ExitCode::SUCCESS)
}

async fn queen(settings: &Settings, command: QueenCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueenCommand::Start { queen_bin, timeout } => {
            queen_lifecycle::start(settings, queen_bin, timeout).await
        }
        QueenCommand::Stop { timeout } => queen_lifecycle::stop(settings, timeout).await,
        QueenCommand::Status => queen_lifecycle::status(settings).await,
        QueenCommand::Info => queen_lifecycle::info(settings).await,
        QueenCommand::Rebuild { with_local_hive } => {
            queen_lifecycle::rebuild(settings, with_local_hive).await
        }
    }
}

fn hive(settings: &Settings, command: HiveCommand) -> anyhow::Result<Operation> {
    Ok(match command {
        HiveCommand::Install {
            target,
            accept_new_host_keys,
        } => Operation::HiveInstall {
            hive_id: target.pattern()?,
            accept_new_host_keys,
        },
        HiveCommand::Uninstall { target } => {
            let hive_id = target.pattern()?;
            if !prompt::confirm(
                &format!("Uninstall rbee from {hive_id} (its workers are stopped)?"),
                settings.yes,
            )? {
                anyhow::bail!("not confirmed; nothing changed");
            }
            Operation::HiveUninstall { hive_id }
        }
        HiveCommand::Start {
            target,
            accept_new_host_keys,
        } => Operation::HiveStart {
            hive_id: target.pattern()?,
            accept_new_host_keys,
        },
        HiveCommand::Stop { target } => Operation::HiveStop {
            hive_id: target.pattern()?,
        },
        HiveCommand::Status { target } => Operation::HiveStatus {
            hive_id: target.pattern()?,
        },
        HiveCommand::List => Operation::HiveList,
        HiveCommand::Refresh { target } => Operation::HiveRefresh {
            hive_id: target.pattern()?,
        },
        HiveCommand::Remove { alias } => {
            if !prompt::confirm(
                &format!(
                    "Remove {alias} from the queen's inventory (the machine is left as it is)?"
                ),
                settings.yes,
            )? {
                anyhow::bail!("not confirmed; nothing changed");
            }
            Operation::HiveRemove { alias }
        }
        HiveCommand::Add(_) => unreachable!("the wizard runs `hive add`"),
    })
}

fn pattern(pattern: Option<String>, all: bool) -> anyhow::Result<String> {
    cli::Target { pattern, all }.pattern()
}

fn model(settings: &Settings, command: ModelCommand) -> anyhow::Result<Operation> {
    Ok(match command {
        ModelCommand::Download {
            model,
            pattern: p,
            all,
        } => Operation::ModelDownload {
            hive_id: pattern(p, all)?,
            model,
        },
        ModelCommand::Push {
            file,
            pattern: p,
            all,
        } => {
            let path = std::fs::canonicalize(&file)
                .with_context(|| format!("model file {}", file.display()))?;
            Operation::ModelPush {
                hive_id: pattern(p, all)?,
                path: path.display().to_string(),
            }
        }
        ModelCommand::List { pattern: p, all: _ } => Operation::ModelList {
            hive_id: p.unwrap_or_else(|| "all".to_owned()),
        },
        ModelCommand::Get {
            model,
            pattern: p,
            all,
        } => Operation::ModelGet {
            hive_id: pattern(p, all)?,
            model,
        },
        ModelCommand::Delete {
            model,
            pattern: p,
            all,
        } => {
            let hive_id = pattern(p, all)?;
            if !prompt::confirm(&format!("Delete {model} from {hive_id}?"), settings.yes)? {
                anyhow::bail!("not confirmed; nothing changed");
            }
            Operation::ModelDelete { hive_id, model }
        }
        ModelCommand::Load {
            model,
            hive,
            keep_alive,
        } => Operation::ModelLoad {
            model,
            hive_id: hive,
            keep_alive,
        },
    })
}

/// Settles the model of an `infer` or `chat` given without `--model`: the one model
/// ready workers serve, or the operator's choice among several (an error listing them
/// without a terminal).
pub async fn resolve_model(
    settings: &Settings,
    options: &mut cli::GenerationArgs,
) -> anyhow::Result<()> {
    if options.model.is_some() {
        return Ok(());
    }
    let Some(listed) = settings.client()?.get_json("/v1/models").await? else {
        anyhow::bail!(
            "no queen answers at {}, and no --model was given\nhint: start it with `rbee-keeper queen start`",
            settings.queen_url
        );
    };
    let models = listed["data"].as_array().cloned().unwrap_or_default();
    // Served by ready workers: the entries without the hives that hold them on disk.
    let id = |m: &serde_json::Value| m["id"].as_str().map(str::to_owned);
    let served: Vec<String> = models
        .iter()
        .filter(|m| m.get("hives").is_none())
        .filter_map(id)
        .collect();
    let chosen = match served.as_slice() {
        [one] => one.clone(),
        [] => {
            let held: Vec<String> = models.iter().filter_map(id).collect();
            anyhow::bail!(
                "no ready worker serves a model, and no --model was given{}\nhint: name one with --model (a request loads it)",
                if held.is_empty() {
                    String::new()
                } else {
                    format!(" (the hives hold: {})", held.join(", "))
                }
            );
        }
        several => prompt::choose("model", several, "--model")?,
    };
    options.model = Some(chosen);
    Ok(())
}

fn worker(command: WorkerCommand) -> Operation {
    match command {
        WorkerCommand::Spawn {
            hive,
            model,
            device,
            parallel,
            ctx_size,
            keep_alive,
        } => Operation::WorkerSpawn {
            hive_id: hive,
            model,
            device,
            parallel,
            ctx_size,
            keep_alive,
        },
        WorkerCommand::List { hive } => Operation::WorkerList { hive_id: hive },
        WorkerCommand::Get { worker_id } => Operation::WorkerGet { worker_id },
        WorkerCommand::Stop { worker_id } => Operation::WorkerStop { worker_id },
        WorkerCommand::Logs {
            worker_id,
            lines,
            follow,
        } => Operation::WorkerLogs {
            worker_id,
            lines,
            follow,
        },
        WorkerCommand::Wait {
            model,
            hive,
            timeout,
        } => Operation::WaitReady {
            model,
            hive_id: hive,
            timeout_s: timeout,
        },
    }
}

async fn job(settings: &Settings, command: JobCommand) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    match command {
        JobCommand::List => {
            let jobs = client
                .get_json("/v1/jobs")
                .await?
                .with_context(|| format!("the queen is not running at {}", client.base()))?;
            settings.say(&table::format_value(&jobs), jobs);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Watch { job_id } => Ok(follow(settings, &client, &job_id).await?.0),
        JobCommand::Cancel { job_id } => {
            client.cancel(&job_id).await?;
            settings.say(
                &format!("cancel requested for {job_id}"),
                serde_json::json!({"job_id": job_id, "cancel": true}),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Submits `operation` and renders its stream; the exit code follows the outcome.
///
/// An operator at a terminal is asked to settle what the job could not: host keys
/// nobody has trusted yet (trust them?), or a model name several files match (which
/// one?); the operation then runs again with the answer. A script gets the error as
/// it is, naming the host key's fingerprint or the models to choose from.
pub async fn run_job(settings: &Settings, operation: &Operation) -> anyhow::Result<ExitCode> {
    let client = settings.client()?;
    if let Operation::HiveInstall { hive_id, .. } = operation {
        local_hive_notice(settings, &client, hive_id).await?;
    }
    let (code, terminal) = submit_and_follow(settings, &client, operation).await?;
    let JobEvent::Error(error) = &terminal else {
        return Ok(code);
    };
    if settings.json || !prompt::at_terminal() {
        return Ok(code);
    }
    let retry = if error.code == ErrorCode::HostKeyUnknown {
        match with_accepted_host_keys(operation) {
            Some(retry)
                if prompt::confirm(
                    "Trust the host keys shown above and record them in known_hosts?",
                    false,
                )? =>
            {
                retry
            }
            _ => return Ok(code),
        }
    } else if !error.choices.is_empty() {
        let mut retry = operation.clone();
        let Some(model) = model_mut(&mut retry) else {
            return Ok(code);
        };
        *model = prompt::choose("model", &error.choices, "--model")?;
        retry
    } else {
        return Ok(code);
    };
    Ok(submit_and_follow(settings, &client, &retry).await?.0)
}

/// Submits `operation` and follows it to its end, rendering every event.
pub async fn submit_and_follow(
    settings: &Settings,
    client: &QueenClient,
    operation: &Operation,
) -> anyhow::Result<(ExitCode, JobEvent)> {
    let submitted = client.submit(operation).await?;
    tracing::info!(job_id = %submitted.job_id, "job submitted");
    follow(settings, client, &submitted.job_id).await
}

fn with_accepted_host_keys(operation: &Operation) -> Option<Operation> {
    match operation {
        Operation::HiveInstall { hive_id, .. } => Some(Operation::HiveInstall {
            hive_id: hive_id.clone(),
            accept_new_host_keys: true,
        }),
        Operation::HiveStart { hive_id, .. } => Some(Operation::HiveStart {
            hive_id: hive_id.clone(),
            accept_new_host_keys: true,
        }),
        _ => None,
    }
}

/// The model an operation names, so a retry can name the one the operator chose.
fn model_mut(operation: &mut Operation) -> Option<&mut String> {
    match operation {
        Operation::WorkerSpawn { model, .. }
        | Operation::ModelGet { model, .. }
        | Operation::ModelDelete { model, .. }
        | Operation::ModelLoad { model, .. }
        | Operation::Infer { model, .. } => Some(model),
        _ => None,
    }
}

/// Installing on localhost over SSH works, but a queen built with `local-hive` does
/// the same in-process, without SSH's overhead: say so before going on.
async fn local_hive_notice(
    settings: &Settings,
    client: &QueenClient,
    pattern: &str,
) -> anyhow::Result<()> {
    let Ok(inventory) = rbee_config::Inventory::load(&settings.config.inventory_path(), false)
    else {
        return Ok(());
    };
    let includes_localhost = inventory
        .select(pattern)
        .is_ok_and(|hives| hives.iter().any(|h| h.is_localhost()));
    let build = client.get_json("/v1/build-info").await?.unwrap_or_default();
    let has_local_hive = build["features"]
        .as_array()
        .is_some_and(|f| f.iter().any(|v| v == "local-hive"));
    if !includes_localhost || has_local_hive {
        return Ok(());
    }
    eprintln!(
        "{} Performance notice: you are installing a hive on localhost, but this queen was built \
         without the local-hive feature.\n   Every localhost operation will go over SSH (milliseconds) \
         instead of in-process (microseconds).\n   Rebuild with: rbee-keeper queen rebuild --with-local-hive",
        console::style("⚠").yellow()
    );
    if !prompt::confirm("Continue installing over SSH?", settings.yes)? {
        anyhow::bail!("not confirmed; nothing changed");
    }
    Ok(())
}

/// Follows a job to its end. The first Ctrl-C cancels the job on the queen and waits
/// for its `cancelled` event; a second one leaves at once.
async fn follow(
    settings: &Settings,
    client: &QueenClient,
    job_id: &str,
) -> anyhow::Result<(ExitCode, JobEvent)> {
    let mut renderer = Renderer::new(settings.json);
    let stream = client.follow(job_id, |event| renderer.event(event));
    tokio::pin!(stream);
    let terminal = tokio::select! {
        terminal = &mut stream => terminal?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ncancelling {job_id} (Ctrl-C again to leave now)");
            client.cancel(job_id).await?;
            tokio::select! {
                terminal = tokio::time::timeout(Duration::from_secs(10), &mut stream) => {
                    terminal.context("the queen did not confirm the cancellation in 10s")??
                }
                _ = tokio::signal::ctrl_c() => {
                    return Ok((ExitCode::from(EXIT_CANCELLED), JobEvent::Cancelled { reason: "left by the operator".to_owned() }));
                }
            }
        }
    };
    let code = match terminal {
        JobEvent::Done => ExitCode::SUCCESS,
        JobEvent::Cancelled { .. } => ExitCode::from(EXIT_CANCELLED),
        _ => ExitCode::FAILURE,
    };
    Ok((code, terminal))
}
