// Package optimizers is saddle's pluggable optimizer layer: each update rule builds one parameter's step inside a
// GoMLX graph from plain nodes, so the same rules drive LLM fine-tuning and the small diagonal theory model.
//
// The rules span the steepest-descent family of the saddle paper,
//
//	x ← x − lr·(sign(g)·|g|^(q−1) + α·x),
//
// from gradient descent (q=2: "sgd", with momentum and Nesterov) to sign descent (q=1: "sign", "signum", "lion",
// and the Adam variants, which behave like sign descent near a saddle), with "steepest" for any q in [1, 2].
// Weight decay is added for every rule by New: coupled (wd·x joins the gradient before the rule, L2 style) or
// decoupled (the α·x term above, applied next to the rule's step; AdamW style).
//
// The caller owns all optimizer state: a rule's state lives in NumSlots "slots", tensors shaped like the parameter
// that start at zero and that the caller feeds back each step (and checkpoints). The learning rate and the 1-based
// step count are graph inputs, so schedules (see NewSchedule) never trigger a recompilation.
//
// A third party adds a rule with one file that calls Register from init; see the package example.
package optimizers
