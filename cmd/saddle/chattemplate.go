package main

import (
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/chat"
	"github.com/saddle-ml/saddle/finetune"
	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/tokenizer"
)

func newChatTemplateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chat-template",
		Short: "Print what the model's chat template renders for a conversation (apply_chat_template, not tokenized)",
		Long: `chat-template renders a conversation with the model's chat template as Hugging Face's
apply_chat_template(messages, tools=tools, add_generation_prompt=..., tokenize=False) does, with the tokenizer's
BOS and EOS tokens, and prints the text exactly (no newline added). FILE holds a JSON array of messages or an
object {"messages": [...], "tools": [...]}; messages are OpenAI / Hugging Face chat messages (content as a string
or a list of text parts, name, tool_calls, tool turns with tool_call_id).`,
		Args: cobra.NoArgs,
		RunE: runChatTemplate,
	}
	addModelFlag(cmd)
	addJSONFlag(cmd)
	f := cmd.Flags()
	f.String("messages", "", "JSON file: an array of messages, or {\"messages\": [...], \"tools\": [...]}")
	f.Bool("add-generation-prompt", false, "end with the template's assistant header, as for generation")
	return cmd
}

func runChatTemplate(cmd *cobra.Command, _ []string) error {
	file := flagString(cmd, "messages")
	if file == "" {
		return usagef("chat-template needs --messages FILE")
	}
	data, err := fileio.ReadFile(file)
	if err != nil {
		return err
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		return fmt.Errorf("%s: not valid UTF-8", file)
	}
	conv, err := chat.ParseConversation(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	src, err := resolveModel(cmd)
	if err != nil {
		return err
	}
	path := src.Path
	tok, err := loadTokenizer(path)
	if err != nil {
		return err
	}
	tmpl, opts, err := modelChatTemplate(path, tok)
	if err != nil {
		return err
	}
	opts.AddGenerationPrompt = flagBool(cmd, "add-generation-prompt")
	if conv.Tools != nil {
		opts.Extra = map[string]any{"tools": conv.Tools}
	}
	text, err := tmpl.Render(conv.Messages, opts)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", path, file, err)
	}
	if flagBool(cmd, "json") {
		return printJSON(cmd.OutOrStdout(), map[string]any{"text": text})
	}
	_, err = io.WriteString(cmd.OutOrStdout(), text)
	return err
}

// modelChatTemplate is the chat template of the model at path (its tokenizer's) with the special tokens it is
// rendered with; a model without one is an error saying so.
func modelChatTemplate(path string, tok *tokenizer.Tokenizer) (*chat.Template, chat.Options, error) {
	if tok.ChatTemplate() == "" {
		return nil, chat.Options{}, fmt.Errorf("%s: the model has no chat template (chat_template in tokenizer_config.json, "+
			"tokenizer.chat_template in a GGUF): it is not a chat/instruct model", path)
	}
	tmpl, opts, err := finetune.ChatSetup(tok, finetune.TokenizeOptions{})
	if err != nil {
		return nil, chat.Options{}, fmt.Errorf("%s: %w", path, err)
	}
	return tmpl, opts, nil
}

// chatPrompt is the prompt of generate --chat: prompt as one user message rendered with the model's chat template
// and its generation prompt, encoded without adding special tokens (the template writes them), as
// apply_chat_template(..., add_generation_prompt=True, tokenize=True) does.
func chatPrompt(path string, tok *tokenizer.Tokenizer, prompt string) ([]int, error) {
	if prompt == "" {
		return nil, usagef("--chat needs --prompt: the user message to answer")
	}
	tmpl, opts, err := modelChatTemplate(path, tok)
	if err != nil {
		return nil, err
	}
	opts.AddGenerationPrompt = true
	text, err := tmpl.Render([]chat.Message{{Role: "user", Content: prompt}}, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tok.Encode(text, false), nil
}
