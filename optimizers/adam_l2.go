package optimizers

// adam-l2 is Adam with coupled L2 weight decay (default 0.01): wd·x joins the gradient, so Adam's normalization
// rescales the decay too (the difference AdamW was made to remove).
func init() { Register("adam-l2", newAdamFactory("adam-l2", 0.01, Coupled)) }
