//! Renders chat messages into a prompt with the model's own Jinja chat template.

use minijinja::{Environment, ErrorKind, context};
use rbee_protocol::ChatMessage;

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("the model's chat template does not compile: {0:#}")]
    Compile(minijinja::Error),
    #[error("the model's chat template failed on these messages: {0:#}")]
    Render(minijinja::Error),
}

/// A compiled chat template (`tokenizer.chat_template` in the GGUF metadata).
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // Hugging Face renders templates with these set; templates rely on them to
        // avoid stray newlines.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Templates are written for Python's Jinja and call string methods such as
        // `.strip()` and `.startswith()`.
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(ChatTemplateError::Compile)?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages` followed by the prompt that opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ChatTemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(ChatTemplateError::Render)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(ChatTemplateError::Render)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(content: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
        }
    }

    #[test]
    fn chatml_renders_with_default_system_prompt() {
        let template =
            ChatTemplate::new(CHATML.into(), String::new(), String::new()).expect("compiles");
        let prompt = template.render(&[user("Hi")]).expect("renders");
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let source = "{{ messages[0]['content'].strip() }}{{ bos_token }}".to_owned();
        let template = ChatTemplate::new(source, "<s>".into(), String::new()).expect("compiles");
        assert_eq!(template.render(&[user("  x  ")]).expect("renders"), "x<s>");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let source = "{{ raise_exception('only user turns') }}".to_owned();
        let template = ChatTemplate::new(source, String::new(), String::new()).expect("compiles");
        let err = template.render(&[user("x")]).expect_err("must fail");
        assert!(err.to_string().contains("only user turns"), "{err}");
    }
}
