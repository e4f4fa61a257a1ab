//! The command line: one subcommand per operation, plus the queen's lifecycle.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rbee-keeper",
    version,
    about = "Run LLM inference across your own machines"
)]
pub struct Cli {
    /// The queen's URL (default: from config.toml, http://127.0.0.1:8500).
    #[arg(long, global = true, env = "RBEE_QUEEN_URL")]
    pub queen_url: Option<String>,
    /// config.toml to read (default: ~/.config/rbee/config.toml).
    #[arg(long, global = true, env = "RBEE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print every job event as one JSON line, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to every confirmation prompt.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// More log output (repeat for more).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the queen daemon on this machine.
    #[command(subcommand)]
    Queen(QueenCommand),
    /// The whole cluster: hives, workers, queen.
    Status,
    /// Manage hives (machines driven over SSH).
    #[command(subcommand)]
    Hive(HiveCommand),
    /// Manage models in hives' caches.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Manage worker processes.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Generate text with the best ready worker serving a model.
    Infer(InferArgs),
    /// Chat with a model interactively; the conversation is kept until you leave.
    Chat(ChatArgs),
    /// Bring hives to the state a playbook describes.
    Play {
        file: PathBuf,
        /// Change nothing; report what would change.
        #[arg(long)]
        check: bool,
        /// Only the hives this pattern selects.
        #[arg(long)]
        limit: Option<String>,
    },
    /// Inspect the inventory.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Print the shell completion script, e.g. `rbee-keeper completions bash >
    /// /etc/bash_completion.d/rbee-keeper`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), e.g. `rbee-keeper man > rbee-keeper.1`.
    Man,
    /// Jobs the queen knows.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Subcommand, Debug)]
pub enum QueenCommand {
    /// Start queen-rbee in the background; does nothing when it already runs.
    Start {
        /// The queen-rbee binary (default: next to rbee-keeper, else on PATH).
        #[arg(long, env = "RBEE_QUEEN_BIN")]
        queen_bin: Option<PathBuf>,
        /// Seconds to wait for the queen to answer /health.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Stop the queen gracefully (running jobs end as cancelled).
    Stop {
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Is the queen running, and which build is it?
    Status,
    /// The queen's build, configuration and files.
    Info,
    /// Rebuild queen-rbee from source with cargo, output shown live.
    Rebuild {
        /// Run localhost operations in-process instead of over SSH.
        #[arg(long)]
        with_local_hive: bool,
    },
}

/// Which hives an operation targets: a pattern, or `--all`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Hive alias, group, glob or pattern (`a:b`, `a:&b`, `a:!b`).
    pub pattern: Option<String>,
    /// Every hive in the inventory.
    #[arg(long, conflicts_with = "pattern")]
    pub all: bool,
}

impl Target {
    pub fn pattern(&self) -> anyhow::Result<String> {
        match (&self.pattern, self.all) {
            (Some(p), false) => Ok(p.clone()),
            (None, true) => Ok("all".to_owned()),
            _ => anyhow::bail!("name a hive, a group or a pattern, or pass --all"),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum HiveCommand {
    /// Push the agent and worker binaries to hives.
    Install {
        #[command(flatten)]
        target: Target,
        /// Trust hosts whose key is not yet known (recorded in known_hosts).
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Stop a hive's workers and remove rbee from it.
    Uninstall {
        #[command(flatten)]
        target: Target,
    },
    /// Reach hives, check their agent, detect devices, mark them online.
    Start {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        accept_new_host_keys: bool,
    },
    /// Stop hives' workers and mark them offline.
    Stop {
        #[command(flatten)]
        target: Target,
    },
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Every hive of the inventory, reachable or not.
    List,
    /// Detect hives' devices again.
    Refresh {
        #[command(flatten)]
        target: Target,
    },
    /// Add a hive to the queen's inventory: asks at a terminal for what no flag gave,
    /// reaches the host, shows its host key's fingerprint, checks its platform, free disk
    /// and install directory, then writes it into the inventory file, comments kept.
    Add(HiveAddArgs),
    /// Take a hive out of the queen's inventory file (asks first unless --yes); the
    /// machine itself is left as it is.
    Remove { alias: String },
}

/// `hive add`: every question the wizard asks has its flag, so a script needs no
/// terminal (the alias and --host are then required; the rest default to the
/// inventory's `[defaults]`).
#[derive(Args, Debug, Clone, Default)]
pub struct HiveAddArgs {
    /// The hive's name in the inventory (asked at a terminal, the host offered).
    pub alias: Option<String>,
    /// Host name or address to reach it at over SSH.
    #[arg(long)]
    pub host: Option<String>,
    /// SSH port (default: the inventory's, else ~/.ssh/config's, else 22).
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH user (default: the inventory's, else ~/.ssh/config's, else the queen's user).
    #[arg(long)]
    pub user: Option<String>,
    /// Private key to log in with (default: the inventory's, else ~/.ssh/config's or the
    /// usual ~/.ssh keys, then ssh-agent's keys).
    #[arg(long)]
    pub identity_file: Option<PathBuf>,
    /// A group the hive joins (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Where rbee lives on the hive (default: the inventory's, else ~/.rbee).
    #[arg(long)]
    pub install_dir: Option<String>,
    /// Trust the host's key when it is not yet known (recorded in known_hosts).
    #[arg(long)]
    pub accept_new_host_keys: bool,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Download `repo` or `repo:file.gguf` from Hugging Face onto hives.
    Download {
        model: String,
        #[arg(long = "hive")]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "pattern")]
        all: bool,
    },
    /// Stream a model file from this machine to hives.
    Push {
        file: PathBuf,
        #[arg(long = "hive")]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "pattern")]
        all: bool,
    },
    List {
        #[arg(long = "hive")]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "pattern")]
        all: bool,
    },
    /// One model: full id, `org/repo`, or a unique file name or stem.
    Get {
        model: String,
        #[arg(long = "hive")]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "pattern")]
        all: bool,
    },
    /// Delete a model from hives (asks first unless --yes; refused while a worker uses it).
    Delete {
        model: String,
        #[arg(long = "hive")]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "pattern")]
        all: bool,
    },
    /// Load a model now: start a worker for it where it fits best, unless one serves
    /// it (as a request for it would).
    Load {
        model: String,
        /// Only on this hive.
        #[arg(long)]
        hive: Option<String>,
        /// Unload it after this long without requests ("5m", "30s", 0, -1 = never);
        /// the queen's keep_alive by default.
        #[arg(long)]
        keep_alive: Option<rbee_protocol::KeepAlive>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// Start a worker for a model on a hive's device.
    Spawn {
        #[arg(long)]
        hive: String,
        #[arg(long)]
        model: String,
        /// cpu, cuda:N or metal.
        #[arg(long, default_value = "cpu")]
        device: rbee_protocol::DeviceSpec,
        /// Requests the worker serves at once (its sequence slots; 4 by default on
        /// the CPU engine).
        #[arg(long)]
        parallel: Option<u32>,
        /// Key/value positions of all its slots together, split evenly.
        #[arg(long)]
        ctx_size: Option<u32>,
        /// Unload the worker after this long without requests ("5m", "30s", 0); a
        /// worker started by hand stays until stopped otherwise.
        #[arg(long)]
        keep_alive: Option<rbee_protocol::KeepAlive>,
    },
    List {
        #[arg(long)]
        hive: Option<String>,
    },
    Get {
        worker_id: String,
    },
    Stop {
        worker_id: String,
    },
    Logs {
        worker_id: String,
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Wait until a ready worker serves a model.
    Wait {
        #[arg(long)]
        model: String,
        #[arg(long)]
        hive: Option<String>,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// The prompt, sent as a user's message: rendered with the model's chat template
    /// when it has one (as `ollama run` does), as it is otherwise.
    pub prompt: String,
    /// Send the prompt as it is, without the chat template (a completion).
    #[arg(long, conflicts_with_all = ["chat", "system"])]
    pub raw: bool,
    /// Send the prompt as a chat message, and fail if the model has no chat template.
    #[arg(long)]
    pub chat: bool,
    /// A system message before the prompt; implies --chat.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub options: GenerationArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// A system message that opens the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub options: GenerationArgs,
}

/// Which worker generates, and how it samples.
#[derive(Args, Debug, Clone)]
pub struct GenerationArgs {
    /// The model; when not given, the one model ready workers serve (a terminal is
    /// asked to choose when there are several).
    #[arg(long)]
    pub model: Option<String>,
    /// Only workers on this hive.
    #[arg(long)]
    pub hive: Option<String>,
    /// Only this worker.
    #[arg(long)]
    pub worker: Option<String>,
    /// Spawn a worker when none serves the model (on the hive with the most free memory
    /// that holds it).
    #[arg(long)]
    pub spawn: bool,
    /// How long the serving worker stays loaded without requests ("5m", "30s", 0 =
    /// unload after this request, -1 = never); the queen's keep_alive by default.
    #[arg(long)]
    pub keep_alive: Option<rbee_protocol::KeepAlive>,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<u32>,
    #[arg(long)]
    pub min_p: Option<f64>,
    #[arg(long)]
    pub repeat_penalty: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    List,
    /// Reachability, host keys and agent version per hive.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// The group tree of the inventory file, as `ansible-inventory --graph` draws it.
    Graph,
    /// Make the queen read its inventory file again (after editing it by hand); hives
    /// whose settings did not change keep their connection and state.
    Reload,
    /// Convert an Ansible inventory (INI, or YAML for .yml/.yaml) to rbee's TOML.
    Import {
        file: PathBuf,
        /// Write here instead of standard output (an existing file needs --yes).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    List,
    /// Follow a job's events from the first.
    Watch {
        job_id: String,
    },
    Cancel {
        job_id: String,
    },
}

impl GenerationArgs {
    /// The sampling options as a request, without prompt or messages.
    pub fn request(&self) -> rbee_protocol::InferenceRequest {
        rbee_protocol::InferenceRequest {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            ..rbee_protocol::InferenceRequest::default()
        }
    }

    /// The model, once [`crate::resolve_model`] has settled it.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_default()
    }

    /// The `infer` operation for `request` with these pins.
    pub fn operation(&self, request: rbee_protocol::InferenceRequest) -> rbee_protocol::Operation {
        rbee_protocol::Operation::Infer {
            model: self.model().to_owned(),
            hive_id: self.hive.clone(),
            worker_id: self.worker.clone(),
            spawn: self.spawn,
            keep_alive: self.keep_alive,
            request,
        }
    }
}
