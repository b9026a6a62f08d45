package tokenizer

import (
	"encoding/json"
	"fmt"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// Config is what a tokenizer_config.json says about special tokens and chat.
type Config struct {
	BOSToken, EOSToken string // the token strings; "" when null or absent
	HasBOS             bool   // bos_token is given (null: the tokenizer has none)
	ChatTemplate       string // the default chat template; "" when none
}

// ReadConfig reads the bos_token, eos_token and chat_template of a tokenizer_config.json.
func ReadConfig(path string) (Config, error) {
	data, err := fileio.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return ParseConfig(data, path)
}

// ParseConfig is ReadConfig on the file's bytes; path names the file in errors.
func ParseConfig(data []byte, path string) (Config, error) {
	var c Config
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	var err error
	if bos, ok := raw["bos_token"]; ok {
		c.HasBOS = true
		if c.BOSToken, err = tokenName(bos); err != nil {
			return c, fmt.Errorf("%s: bos_token: %w", path, err)
		}
	}
	if c.EOSToken, err = tokenName(raw["eos_token"]); err != nil {
		return c, fmt.Errorf("%s: eos_token: %w", path, err)
	}
	if tmpl, ok := raw["chat_template"]; ok && !isNull(tmpl) {
		if c.ChatTemplate, err = chatTemplate(tmpl); err != nil {
			return c, fmt.Errorf("%s: chat_template: %w", path, err)
		}
	}
	return c, nil
}

// applyConfig sets the bos/eos ids and the chat template from a tokenizer_config.json.
func (t *Tokenizer) applyConfig(data []byte, path string) error {
	cfg, err := ParseConfig(data, path)
	if err != nil {
		return err
	}
	if cfg.HasBOS {
		t.bos = -1
		if cfg.BOSToken != "" {
			id, ok := t.TokenID(cfg.BOSToken)
			if !ok {
				return fmt.Errorf("%s: bos_token %q is not in the vocabulary", path, cfg.BOSToken)
			}
			t.bos = id
		}
	}
	if cfg.EOSToken != "" {
		id, ok := t.TokenID(cfg.EOSToken)
		if !ok {
			return fmt.Errorf("%s: eos_token %q is not in the vocabulary", path, cfg.EOSToken)
		}
		t.addEOS(id)
	}
	if cfg.ChatTemplate != "" {
		t.chatTemplate = cfg.ChatTemplate
	}
	return nil
}

// applyGenerationConfig adds the eos_token_id (a number or a list) of a generation_config.json.
func (t *Tokenizer) applyGenerationConfig(data []byte, path string) error {
	var cfg struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if isNull(cfg.EOS) {
		return nil
	}
	var many []int
	var one int
	if err := json.Unmarshal(cfg.EOS, &one); err == nil {
		many = []int{one}
	} else if err := json.Unmarshal(cfg.EOS, &many); err != nil {
		return fmt.Errorf("%s: eos_token_id: %w", path, err)
	}
	// An id outside the vocabulary would reach the model's embedding lookup.
	for _, id := range many {
		if id < 0 || id >= t.VocabSize() {
			return fmt.Errorf("%s: eos_token_id %d is outside the vocabulary (%d tokens)", path, id, t.VocabSize())
		}
	}
	for _, id := range many {
		t.addEOS(id)
	}
	return nil
}

func (t *Tokenizer) addEOS(id int) {
	for _, e := range t.eos {
		if e == id {
			return
		}
	}
	t.eos = append(t.eos, id)
}

// tokenName accepts "tok", {"content": "tok", ...} or null.
func tokenName(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", err
	}
	return obj.Content, nil
}

// chatTemplate accepts a string or a list of {"name", "template"} (the "default" one wins).
func chatTemplate(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", err
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}
