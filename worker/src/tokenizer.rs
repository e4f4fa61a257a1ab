//! Builds the model's tokenizer from its GGUF metadata (`tokenizer.ggml.*`) and knows
//! each token's bytes for incremental detokenisation.

use std::collections::HashMap;
use std::path::Path;

use ahash::AHashSet;
use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the GGUF metadata lacks `{0}`")]
    MissingKey(&'static str),
    #[error("the GGUF metadata key `{key}` has the wrong type: {source}")]
    BadValue {
        key: &'static str,
        source: Box<candle_core::Error>,
    },
    #[error("tokenizer model `{0}` is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer `{0}` (`tokenizer.ggml.pre`) is not supported; the worker splits text as llama.cpp does for {names}",
        names = pre_tokenizer_names()
    )]
    UnsupportedPreTokenizer(String),
    #[error("cannot build the tokenizer: {0}")]
    Build(tokenizers::Error),
    #[error("cannot read {path}: {source}")]
    TokenizerJson {
        path: std::path::PathBuf,
        source: tokenizers::Error,
    },
    #[error("cannot tokenize the input: {0}")]
    Encode(tokenizers::Error),
}

/// GGUF token types, as llama.cpp writes them.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// GPT-2's split: contractions, letter runs, number runs, punctuation runs, whitespace.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split: case-insensitive contractions and numbers in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: like Llama 3's but every digit on its own.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's split (Phi-4-mini, Llama 4): words of capitals then lower-case letters,
/// each with its contraction, and numbers in groups of up to three. llama.cpp's form of
/// it, whose `[^a-z]` and `[^A-Z]` letters stand for the upper- and lower-case classes.
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Tekken's split (Mistral Nemo, Mistral Small 3): GPT-4o's without contractions, every
/// digit on its own; llama.cpp's form, as for [`GPT4O_SPLIT`].
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's splits for a file that names no pre-tokenizer, or `default`:
/// punctuation runs first, then GPT-2's split, then number runs, then three digits.
const DEFAULT_SPLITS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];
/// DeepSeek LLM's splits (its 7B and 67B models): line breaks, Latin, Greek and other
/// cased letters with a space before them, ASCII and full-width punctuation, trailing
/// spaces, CJK and Hangul runs, number runs. Letters outside ASCII are written as
/// code points: several of the ranges end on letters (`U+1F7D`, `U+2126`, `U+212A`)
/// that Unicode normalization turns into others, which would break the ranges.
const DEEPSEEK_LLM_SPLITS: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}+",
];
/// DeepSeek Coder's splits: line breaks, letter runs, punctuation runs, CJK and
/// Hangul runs, every digit on its own.
const DEEPSEEK_CODER_SPLITS: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}",
];
/// DeepSeek V3's splits: numbers in groups of up to three, CJK and kana runs, then
/// punctuation that starts a Latin word, letter and mark runs, symbol runs.
const DEEPSEEK_V3_SPLITS: &[&str] = &[
    r"\p{N}{1,3}",
    r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
/// Falcon's splits: punctuation runs, GPT-2's split, then three digits.
const FALCON_SPLITS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"[0-9][0-9][0-9]",
];
/// BLOOM's and Poro's split: runs of anything but spaces and sentence punctuation.
const BLOOM_SPLIT: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+";
/// Seed-Coder's split: Qwen2's, whose punctuation runs stop at line breaks.
const SEED_CODER_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Ling's split (`bailingmoe`): Qwen2's with one line break a piece.
const BAILING_SPLIT: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, Copy)]
struct PreTokenizer {
    /// The regexes, applied in order.
    splits: &'static [&'static str],
    /// A piece that is a token of its own is that token, whatever the merges say
    /// (llama.cpp's `ignore_merges`).
    whole_pieces: bool,
    /// BOS is added when the file does not say (`tokenizer.ggml.add_bos_token`).
    bos_by_default: bool,
}

impl PreTokenizer {
    const fn plain(splits: &'static [&'static str]) -> Self {
        PreTokenizer {
            splits,
            whole_pieces: false,
            bos_by_default: false,
        }
    }

    /// Llama 3's and Tekken's flags: whole pieces, BOS by default.
    const fn whole(splits: &'static [&'static str]) -> Self {
        PreTokenizer {
            splits,
            whole_pieces: true,
            bos_by_default: true,
        }
    }
}

/// The `tokenizer.ggml.pre` values llama.cpp names and what it does for each, in its
/// groups (`llama-vocab.cpp`): the names it gives the same splits and flags share a row.
const PRE_TOKENIZERS: &[(&[&str], PreTokenizer)] = &[
    (&["default"], PreTokenizer::plain(DEFAULT_SPLITS)),
    (
        &[
            "gpt-2",
            "gpt2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "a.x-4.0",
            "mellum",
            "gigachat",
            "exaone4",
            "trillion",
            "granite-docling",
        ],
        PreTokenizer::plain(&[GPT2_SPLIT]),
    ),
    // These split every digit first, then apply GPT-2's regex.
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        PreTokenizer::plain(&[r"\p{N}", GPT2_SPLIT]),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
        ],
        PreTokenizer::whole(&[LLAMA3_SPLIT]),
    ),
    // Llama 3's regex without its whole pieces or BOS (Phi-4's files name `dbrx`).
    (&["dbrx", "smaug-bpe"], PreTokenizer::plain(&[LLAMA3_SPLIT])),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "stablelm2",
            "megrez",
            "hunyuan",
            "grok-2",
            "kormo",
            "f2llmv2",
            "solar-open",
        ],
        PreTokenizer::plain(&[QWEN2_SPLIT]),
    ),
    (&["deepseek-llm"], PreTokenizer::plain(DEEPSEEK_LLM_SPLITS)),
    (
        &["deepseek-coder"],
        PreTokenizer::plain(DEEPSEEK_CODER_SPLITS),
    ),
    (
        &["deepseek-v3", "hunyuan-dense"],
        PreTokenizer::plain(DEEPSEEK_V3_SPLITS),
    ),
    (&["falcon"], PreTokenizer::plain(FALCON_SPLITS)),
    (
        &["poro-chat", "bloom", "gpt3-finnish"],
        PreTokenizer::plain(&[BLOOM_SPLIT]),
    ),
    (&["viking"], PreTokenizer::plain(&[BLOOM_SPLIT, r"\p{N}"])),
    (&["seed-coder"], PreTokenizer::plain(&[SEED_CODER_SPLIT])),
    (
        &["bailingmoe", "bailingmoe2", "llada-moe"],
        PreTokenizer::plain(&[BAILING_SPLIT]),
    ),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        PreTokenizer::plain(&[GPT4O_SPLIT]),
    ),
    (&["tekken"], PreTokenizer::whole(&[TEKKEN_SPLIT])),
];

/// The pre-tokenizer llama.cpp applies for `pre`.
fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    PRE_TOKENIZERS
        .iter()
        .find(|(names, _)| names.contains(&pre))
        .map(|&(_, pre)| pre)
}

/// Every `tokenizer.ggml.pre` value the worker splits as llama.cpp does, for errors.
fn pre_tokenizer_names() -> String {
    PRE_TOKENIZERS
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tokenizer of one model, plus what generation needs to know about its tokens.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The bytes each token contributes to the output; empty for control tokens, which
    /// are never shown to users.
    token_bytes: Vec<Vec<u8>>,
    tokens: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    add_bos: bool,
    /// Every id that ends a generation: the file's EOS, EOT and end-of-turn tokens.
    pub end_of_generation: Vec<u32>,
}

impl TextTokenizer {
    /// Builds the tokenizer from GGUF metadata, preferring a `tokenizer.json` beside
    /// the model for encoding when one exists.
    pub fn from_gguf(
        metadata: &HashMap<String, Value>,
        model_path: &Path,
    ) -> Result<Self, TokenizerError> {
        let tokens: Vec<String> = string_array(metadata, "tokenizer.ggml.tokens")?;
        let token_types = optional_array(
            metadata,
            "tokenizer.ggml.token_type",
            tokens.len(),
            1,
            |t| t.to_i32().ok(),
        )?;
        let kind = metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .map_or("gpt2", String::as_str);
        let token_type = |id: usize| token_types.get(id).copied().unwrap_or(1);

        let (inner, token_bytes, add_bos_default) = match kind {
            "gpt2" => {
                let pre = metadata
                    .get("tokenizer.ggml.pre")
                    .and_then(|v| v.to_string().ok())
                    .map_or("default", String::as_str);
                let pre = pre_tokenizer(pre)
                    .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre.to_owned()))?;
                let merges = string_array(metadata, "tokenizer.ggml.merges")?;
                let inner = byte_level_bpe(&tokens, &merges, pre)?;
                let decode = byte_level_decoder();
                let bytes = tokens
                    .iter()
                    .enumerate()
                    .map(|(id, text)| match token_type(id) {
                        TOKEN_TYPE_CONTROL => Vec::new(),
                        TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
                        _ => text
                            .chars()
                            .map(|c| decode.get(&c).copied().unwrap_or(b'?'))
                            .collect(),
                    })
                    .collect();
                (inner, bytes, pre.bos_by_default)
            }
            "llama" => {
                let scores =
                    optional_array(metadata, "tokenizer.ggml.scores", tokens.len(), 0.0, |s| {
                        s.to_f32().ok()
                    })?;
                let add_space_prefix = metadata
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true);
                let inner = sentencepiece_bpe(&tokens, &scores, add_space_prefix)?;
                let bytes = tokens
                    .iter()
                    .enumerate()
                    .map(|(id, text)| match token_type(id) {
                        TOKEN_TYPE_CONTROL => Vec::new(),
                        TOKEN_TYPE_BYTE => {
                            parse_byte_token(text).map_or_else(Vec::new, |b| vec![b])
                        }
                        _ => text.replace('\u{2581}', " ").into_bytes(),
                    })
                    .collect();
                (inner, bytes, true)
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };

        let mut inner = inner;
        let specials: Vec<AddedToken> = tokens
            .iter()
            .enumerate()
            .filter(|(id, _)| {
                matches!(
                    token_type(*id),
                    TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED
                )
            })
            .map(|(_, text)| AddedToken::from(text.clone(), true).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);

        if let Some(json) = model_path.parent().map(|dir| dir.join("tokenizer.json"))
            && json.is_file()
        {
            inner =
                Tokenizer::from_file(&json).map_err(|source| TokenizerError::TokenizerJson {
                    path: json.clone(),
                    source,
                })?;
        }

        let id_of = |key: &str| metadata.get(key).and_then(|v| v.to_u32().ok());
        let bos_id = id_of("tokenizer.ggml.bos_token_id");
        let eos_id = id_of("tokenizer.ggml.eos_token_id");
        let add_bos = metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(add_bos_default);
        let mut end_of_generation: Vec<u32> = [
            eos_id,
            id_of("tokenizer.ggml.eot_token_id"),
            id_of("tokenizer.ggml.eom_token_id"),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Chat models end a turn with one of these tokens even when the file names
        // another EOS; llama.cpp treats them as end-of-generation too, whether the file
        // marks them control or user-defined (it makes them control).
        const END_OF_TURN: &[&str] = &[
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
        ];
        for (id, text) in tokens.iter().enumerate() {
            if matches!(token_type(id), TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED)
                && END_OF_TURN.contains(&text.as_str())
            {
                end_of_generation.push(id as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        Ok(TextTokenizer {
            inner,
            token_bytes,
            tokens,
            bos_id,
            eos_id,
            add_bos,
            end_of_generation,
        })
    }

    /// Tokenizes `text`, matching special tokens such as `<|im_start|>` as single ids
    /// (as llama.cpp does with `parse_special`), without adding BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(TokenizerError::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes a whole prompt, adding BOS where the model wants it and the text does
    /// not already start with it (chat templates often write it themselves).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos_id)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The bytes `id` adds to the output text; empty for control and unknown ids.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The token's text as the vocabulary spells it, e.g. `<|im_end|>`.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.binary_search(&id).is_ok()
    }
}

/// A per-token numeric array: `default` for entries that are not numbers, and for
/// every token when the key is absent.
fn optional_array<T: Copy>(
    metadata: &HashMap<String, Value>,
    key: &'static str,
    len: usize,
    default: T,
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, TokenizerError> {
    match metadata.get(key) {
        Some(value) => Ok(value
            .to_vec()
            .map_err(|source| TokenizerError::BadValue {
                key,
                source: Box::new(source),
            })?
            .iter()
            .map(|v| convert(v).unwrap_or(default))
            .collect()),
        None => Ok(vec![default; len]),
    }
}

fn string_array(
    metadata: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Vec<String>, TokenizerError> {
    let values = metadata
        .get(key)
        .ok_or(TokenizerError::MissingKey(key))?
        .to_vec()
        .map_err(|source| TokenizerError::BadValue {
            key,
            source: Box::new(source),
        })?;
    values
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|source| TokenizerError::BadValue {
                    key,
                    source: Box::new(source),
                })
        })
        .collect()
}

fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    pre_tokenizer: PreTokenizer,
) -> Result<Tokenizer, TokenizerError> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    // Byte-level tokens never contain a plain space (it is spelled `Ġ`), so the first
    // space separates the two halves of a merge.
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre_tokenizer.whole_pieces)
        .build()
        .map_err(TokenizerError::Build)?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in pre_tokenizer.splits {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(TokenizerError::Build)?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(pre)));
    Ok(tokenizer)
}

/// SentencePiece BPE as llama.cpp runs it: merge the adjacent pair whose result is the
/// highest-scoring vocabulary entry. The same merges, ranked by score, drive HF's BPE.
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    add_space_prefix: bool,
) -> Result<Tokenizer, TokenizerError> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    // Every split of a token into two tokens is a merge, ranked by the token's score:
    // a million lookups for Gemma's 262,144 tokens, so with a fast hash (std's SipHash
    // took most of the time; aHash is keyed at random too, so a file's vocabulary
    // cannot be made to collide), and the strings made only once the order is known.
    let known: AHashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut ranked: Vec<(f32, u32, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if known.contains(left) && known.contains(right) {
                let score = scores.get(id).copied().unwrap_or(0.0);
                ranked.push((score, id as u32, split));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = ranked
        .into_iter()
        .map(|(_, id, split)| {
            let (left, right) = tokens[id as usize].split_at(split);
            (left.to_owned(), right.to_owned())
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(TokenizerError::Build)?;
    // llama.cpp prefixes a space to every stretch of text between special tokens (the
    // first and each after one), whether or not it starts with a space; a normalizer
    // runs on each such stretch alone.
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new("\u{2581}".to_owned()).into());
    }
    normalizers.push(
        Replace::new(" ", "\u{2581}")
            .map_err(TokenizerError::Build)?
            .into(),
    );
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizers)));
    Ok(tokenizer)
}

/// GPT-2 maps every byte to a printable character; this is the inverse map.
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut next_unprintable = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(256 + next_unprintable).unwrap_or('\u{FFFD}');
            next_unprintable += 1;
            c
        };
        map.insert(c, byte);
    }
    map
}

/// Parses SentencePiece byte tokens such as `<0x0A>`.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_decoder_covers_every_byte_once() {
        let map = byte_level_decoder();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'ĉ'], b'\t');
        assert_eq!(map[&'a'], b'a');
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token("<0xFF>"), Some(0xFF));
        assert_eq!(parse_byte_token("hello"), None);
    }

    /// A SentencePiece vocabulary where merges follow the merged token's score.
    fn sentencepiece_metadata() -> HashMap<String, Value> {
        let pieces: &[(&str, f32, i32)] = &[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<0x0A>", 0.0, 6),
            ("\u{2581}", -1.0, 1),
            ("h", -2.0, 1),
            ("e", -2.0, 1),
            ("l", -2.0, 1),
            ("o", -2.0, 1),
            ("ll", -3.0, 1),
            ("\u{2581}h", -4.0, 1),
            ("\u{2581}he", -5.0, 1),
            ("llo", -6.0, 1),
            ("\u{2581}hello", -7.0, 1),
        ];
        let strings =
            |f: fn(&(&str, f32, i32)) -> Value| Value::Array(pieces.iter().map(f).collect());
        HashMap::from([
            (
                "tokenizer.ggml.model".to_owned(),
                Value::String("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_owned(),
                strings(|p| Value::String(p.0.into())),
            ),
            (
                "tokenizer.ggml.scores".to_owned(),
                strings(|p| Value::F32(p.1)),
            ),
            (
                "tokenizer.ggml.token_type".to_owned(),
                strings(|p| Value::I32(p.2)),
            ),
            ("tokenizer.ggml.bos_token_id".to_owned(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".to_owned(), Value::U32(2)),
        ])
    }

    #[test]
    fn sentencepiece_vocabularies_merge_by_score_and_fall_back_to_bytes() {
        let tokenizer =
            TextTokenizer::from_gguf(&sentencepiece_metadata(), Path::new("/none/m.gguf"))
                .expect("tokenizer");
        assert_eq!(tokenizer.encode_prompt("hello").expect("encode"), [1, 13]);
        assert_eq!(
            tokenizer.encode("hello\nhe").expect("encode"),
            [13, 3, 5, 6]
        );
        assert_eq!(tokenizer.token_bytes(13), b" hello");
        // As llama.cpp: a space before every stretch of text, also one that starts with
        // a space and one after a special token.
        assert_eq!(
            tokenizer.encode(" hello</s>hello").expect("encode"),
            [4, 13, 2, 13]
        );
        assert_eq!(tokenizer.token_bytes(3), b"\n");
        assert!(tokenizer.is_end_of_generation(2));
    }

    #[test]
    fn unknown_pre_tokenizers_are_refused() {
        assert!(pre_tokenizer("smollm").is_some());
        assert!(pre_tokenizer("tekken").is_some());
        assert!(pre_tokenizer("something-new").is_none());
        let error = TokenizerError::UnsupportedPreTokenizer("something-new".into()).to_string();
        assert!(error.contains("`something-new`") && error.contains("deepseek-llm, "));
    }

    #[test]
    fn every_pre_tokenizer_builds_and_no_name_has_two() {
        let mut seen = std::collections::HashSet::new();
        for (names, pre) in PRE_TOKENIZERS {
            for name in *names {
                assert!(seen.insert(*name), "{name} named twice");
            }
            byte_level_bpe(
                &["a".into(), "b".into(), "ab".into()],
                &["a b".into()],
                *pre,
            )
            .unwrap_or_else(|e| panic!("{names:?}: {e}"));
        }
    }
}
