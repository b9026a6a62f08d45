package model

// CPUTrainable reports whether the CPU trainer can train an adapter on module: the q, k, v, o, gate, up and down
// projections of a decoder layer (not the output head or the embedding).
func (c *Config) CPUTrainable(module string) bool {
	_, _, ok := parseModule(module, c.NumLayers)
	return ok
}
