package tokenizer

import (
	"encoding/json"
	"fmt"
)

// applyConfig reads bos/eos tokens and the chat template of a tokenizer_config.json.
func (t *Tokenizer) applyConfig(data []byte, path string) error {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if raw, ok := cfg["bos_token"]; ok {
		name, err := tokenName(raw)
		if err != nil {
			return fmt.Errorf("%s: bos_token: %w", path, err)
		}
		t.bos = -1
		if name != "" {
			id, ok := t.TokenID(name)
			if !ok {
				return fmt.Errorf("%s: bos_token %q is not in the vocabulary", path, name)
			}
			t.bos = id
		}
	}
	if raw, ok := cfg["eos_token"]; ok {
		name, err := tokenName(raw)
		if err != nil {
			return fmt.Errorf("%s: eos_token: %w", path, err)
		}
		if name != "" {
			id, ok := t.TokenID(name)
			if !ok {
				return fmt.Errorf("%s: eos_token %q is not in the vocabulary", path, name)
			}
			t.addEOS(id)
		}
	}
	if raw, ok := cfg["chat_template"]; ok && !isNull(raw) {
		tmpl, err := chatTemplate(raw)
		if err != nil {
			return fmt.Errorf("%s: chat_template: %w", path, err)
		}
		t.chatTemplate = tmpl
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
