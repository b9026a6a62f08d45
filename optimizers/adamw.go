package optimizers

// adamw is Adam with decoupled weight decay (Loshchilov & Hutter), default 0.01: x ← x − lr·(adam + wd·x).
func init() { Register("adamw", newAdamFactory("adamw", 0.01, Decoupled)) }
