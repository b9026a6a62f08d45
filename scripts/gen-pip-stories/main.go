// Command gen-pip-stories writes the demo fine-tuning data set data/pip-stories/: short children's
// stories, in the simple vocabulary of TinyStories, in which a small robot named Pip fixes things
// and says "beep boop". The text is original and generated from the templates and word lists
// below (CC0). The output depends only on the seed.
//
//	go run ./scripts/gen-pip-stories [-out data/pip-stories] [-seed 2024]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// rng draws only from PCG's raw outputs (a fixed algorithm), so the data does not change with
// Go's rand helper implementations.
type rng struct{ src *rand.PCG }

func (r rng) intn(n int) int {
	hi, lo := bits.Mul64(r.src.Uint64(), uint64(n))
	if lo < uint64(n) {
		thresh := -uint64(n) % uint64(n)
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), uint64(n))
		}
	}
	return int(hi)
}

func (r rng) pick(xs []string) string { return xs[r.intn(len(xs))] }
func (r rng) chance(p float64) bool   { return float64(r.src.Uint64()>>11)/(1<<53) < p }

type friend struct {
	name     string // "Lily", "a little bird named Tweet"
	short    string // "Lily", "Tweet"
	he, his  string
	him, cap string // cap: "He"/"She"
}

func person(name, sex string) friend {
	if sex == "f" {
		return friend{name, name, "she", "her", "her", "She"}
	}
	return friend{name, name, "he", "his", "him", "He"}
}

func animal(kind, name, sex string) friend {
	f := person(name, sex)
	f.name = kind + " named " + name
	return f
}

var friends = []friend{
	person("Lily", "f"), person("Tom", "m"), person("Ben", "m"), person("Mia", "f"), person("Sam", "m"),
	person("Anna", "f"), person("Max", "m"), person("Lucy", "f"), person("Tim", "m"), person("Sue", "f"),
	person("Jack", "m"), person("Emma", "f"), person("Zoe", "f"), person("Leo", "m"), person("Amy", "f"),
	person("Jake", "m"), person("Ella", "f"), person("Finn", "m"), person("Rosa", "f"), person("Kim", "f"),
	animal("a little bird", "Tweet", "f"), animal("a small dog", "Spot", "m"), animal("a fluffy cat", "Mittens", "f"),
	animal("a happy duck", "Quack", "m"), animal("a little bunny", "Hop", "f"), animal("a green frog", "Ribbit", "m"),
	animal("a kind bear", "Bruno", "m"), animal("a tiny mouse", "Pinky", "f"),
}

// thing: something that breaks, how, how Pip fixes it, and what happens after.
type thing struct {
	name    string   // "kite"
	broken  []string // "had a big hole in it"
	tool    []string // "a piece of soft cloth"
	fix     []string // "patched the hole"
	works   []string // "the kite flew high up in the blue sky"
	whereOk []string // where it is used
}

var things = []thing{
	{"kite", []string{"had a big hole in it", "had a broken stick", "lost its long tail"},
		[]string{"a piece of soft cloth", "some strong tape", "a tiny needle and red thread"},
		[]string{"patched the hole", "fixed the stick", "made a new tail from ribbons"},
		[]string{"the kite flew high up in the blue sky", "the kite danced in the wind"}, []string{"park", "hill"}},
	{"toy car", []string{"lost a wheel", "would not roll", "had a bent wheel"},
		[]string{"a tiny screw", "his little screwdriver", "a drop of oil"},
		[]string{"put the wheel back on", "made the wheel round again", "oiled the wheels"},
		[]string{"the car zoomed across the floor", "the car went vroom vroom"}, []string{"house", "yard"}},
	{"swing", []string{"had a broken rope", "was stuck and would not move", "had a cracked seat"},
		[]string{"a new strong rope", "his shiny wrench", "a smooth new board"},
		[]string{"tied the new rope to the branch", "loosened the stuck bolt", "put on a new seat"},
		[]string{"the swing went up and down, up and down", "the swing flew back and forth"}, []string{"park", "garden"}},
	{"clock", []string{"stopped ticking", "was always too slow", "had a loose hand"},
		[]string{"a tiny gear", "his little screwdriver", "a small spring"},
		[]string{"turned the little gear", "tightened the clock hand", "put in a new spring"},
		[]string{"the clock went tick tock, tick tock", "the clock told the right time again"}, []string{"house", "school"}},
	{"lamp", []string{"would not turn on", "kept blinking", "had a broken switch"},
		[]string{"a new bulb", "a small wire", "a new switch"},
		[]string{"changed the bulb", "fixed the loose wire", "put in the new switch"},
		[]string{"the room was bright and warm", "the lamp glowed like the sun"}, []string{"house", "room"}},
	{"bike", []string{"had a flat tire", "had a loose chain", "made a loud squeak"},
		[]string{"his little pump", "his shiny wrench", "a drop of oil"},
		[]string{"pumped air into the tire", "put the chain back on", "oiled the pedals"},
		[]string{"the bike went fast down the road", "the bike rolled along with no squeak"}, []string{"road", "park"}},
	{"music box", []string{"did not play songs anymore", "played the song too slow", "would not open"},
		[]string{"a tiny key", "a small spring", "his little screwdriver"},
		[]string{"wound the spring", "fixed the little drum inside", "fixed the lid"},
		[]string{"the music box played a sweet song", "a happy song filled the room"}, []string{"house", "room"}},
	{"boat", []string{"had a leak", "had a torn sail", "would not float"},
		[]string{"some sticky glue", "a piece of white cloth", "a small cork"},
		[]string{"filled the crack with glue", "sewed a new sail", "plugged the hole with the cork"},
		[]string{"the boat floated on the pond", "the boat sailed across the water"}, []string{"pond", "lake"}},
	{"wagon", []string{"had a wobbly wheel", "had a broken handle", "would not go straight"},
		[]string{"a new bolt", "a strong stick", "his shiny wrench"},
		[]string{"tightened the wheel", "made a new handle", "fixed the front wheels"},
		[]string{"the wagon rolled along the path", "the wagon carried all the toys"}, []string{"yard", "farm"}},
	{"fence", []string{"had a broken board", "was falling down", "had a big gap"},
		[]string{"a new board", "some nails and a tiny hammer", "a strong post"},
		[]string{"nailed on a new board", "stood the fence up", "filled the gap"},
		[]string{"the fence stood tall and strong", "the animals were safe inside"}, []string{"farm", "garden"}},
	{"umbrella", []string{"had a bent handle", "would not open", "had a hole"},
		[]string{"a pair of pliers", "a small spring", "a patch of cloth"},
		[]string{"made the handle straight", "fixed the spring", "patched the hole"},
		[]string{"the umbrella kept everyone dry in the rain", "the umbrella opened wide"}, []string{"street", "park"}},
	{"teddy bear", []string{"had a torn arm", "lost a button eye", "had a rip in its tummy"},
		[]string{"a needle and thread", "a shiny new button", "a soft patch"},
		[]string{"sewed the arm back on", "sewed on a new eye", "patched the tummy"},
		[]string{"the teddy bear was soft and whole again", "the teddy bear was ready for hugs"}, []string{"room", "house"}},
	{"door", []string{"squeaked very loudly", "was stuck", "would not close"},
		[]string{"a drop of oil", "his shiny wrench", "a small file"},
		[]string{"oiled the squeaky hinge", "loosened the stuck hinge", "made the door edge smooth"},
		[]string{"the door opened with no sound", "the door closed with a soft click"}, []string{"house", "barn"}},
	{"birdhouse", []string{"fell from the tree", "had a broken roof", "had a crooked door"},
		[]string{"some nails and a tiny hammer", "a new piece of wood", "his little saw"},
		[]string{"nailed it back on the branch", "made a new roof", "fixed the little door"},
		[]string{"the birds had a cozy home again", "the birds sang in their house"}, []string{"garden", "park"}},
	{"toy train", []string{"fell off the track", "would not go", "had a broken track"},
		[]string{"a new battery", "a tiny screw", "a piece of track"},
		[]string{"put the train back on the track", "put in a new battery", "fixed the track"},
		[]string{"the train went choo choo around the room", "the train ran round and round"}, []string{"room", "house"}},
	{"drum", []string{"had a hole on top", "made no sound", "had a loose side"},
		[]string{"a new round skin", "some strong string", "his little screwdriver"},
		[]string{"put a new top on the drum", "pulled the string tight", "tightened the side"},
		[]string{"the drum went boom boom boom", "everyone danced to the drum"}, []string{"house", "school"}},
	{"radio", []string{"made only a buzz", "would not play", "had a broken knob"},
		[]string{"a small wire", "a new battery", "a new knob"},
		[]string{"fixed the wire inside", "put in a new battery", "put on the new knob"},
		[]string{"the radio played happy music", "everyone sang along with the radio"}, []string{"house", "kitchen"}},
	{"sandcastle bucket", []string{"had a crack", "lost its handle", "had a hole in the bottom"},
		[]string{"some sticky glue", "a bendy wire", "a small patch"},
		[]string{"glued the crack", "made a new handle", "patched the bottom"},
		[]string{"they built a tall sandcastle", "the bucket carried water and sand"}, []string{"beach", "park"}},
	{"gate", []string{"would not shut", "was stuck", "had a broken latch"},
		[]string{"a drop of oil", "a new latch", "his shiny wrench"},
		[]string{"oiled the hinges", "fixed the stuck bolt", "put on a new latch"},
		[]string{"the gate opened and shut with ease", "the sheep stayed safe inside"}, []string{"farm", "garden"}},
	{"cart", []string{"had a flat wheel", "lost a wheel", "had a broken seat"},
		[]string{"his little pump", "a new wheel", "a new board"},
		[]string{"pumped up the wheel", "put on the new wheel", "fixed the seat"},
		[]string{"the cart rolled to the market", "the cart carried apples and pears"}, []string{"farm", "market"}},
}

var (
	looks = []string{
		"Pip had round blue eyes and little wheels.",
		"Pip was small and shiny, with a tiny red light on his head.",
		"Pip had two long arms and a little box of tools.",
		"Pip was a round robot with big green eyes.",
		"Pip had a shiny silver body and a happy face.",
		"Pip rolled everywhere on his three little wheels.",
	}
	openings = []string{
		"Once upon a time, there was a small robot named Pip.",
		"Once upon a time, in a little town, there lived a robot called Pip.",
		"Pip was a little robot who loved to fix things.",
		"There was once a tiny robot named Pip who could fix anything.",
		"In a small house near the %s, there lived a robot named Pip.",
		"One sunny day, Pip the little robot was rolling through the %s.",
		"One rainy morning, Pip the robot was looking out the window.",
		"Pip the robot liked to help his friends.",
	}
	weather = []string{
		"The sun was warm and bright.", "The sky was blue and the birds were singing.",
		"It was a windy day.", "The grass was green and soft.", "It was a cold day, but Pip felt happy.",
	}
	sad = []string{
		"%s was very sad.", "%s began to cry.", "%s did not know what to do.", "%s felt sad and worried.",
		"%s sat down and frowned.",
	}
	arrive = []string{
		"Pip heard %s and rolled over as fast as he could.",
		"Pip saw %s and came to help.",
		"Just then, Pip came rolling by.",
		"Pip was close by, and his red light began to blink.",
		"%s called out, \"Pip, can you help me?\"",
	}
	promise = []string{
		"\"Beep boop! Do not be sad. I can fix it!\" said Pip.",
		"\"Beep boop!\" said Pip. \"Let me help you.\"",
		"Pip said, \"Beep boop! I will fix it for you.\"",
		"\"Beep boop, I can help!\" said Pip with a big smile.",
		"\"Beep boop! Pip can fix it!\" said the little robot.",
	}
	working = []string{
		"\"Beep boop, beep boop,\" went Pip as he worked.",
		"Pip worked and worked. \"Beep boop,\" he sang.",
		"Pip hummed a little song while he worked.",
		"Pip was very careful and very gentle.",
		"It was hard work, but Pip did not give up.",
	}
	tryFirst = []string{
		"First, Pip tried to push it, but it did not work.",
		"At first, Pip could not find the problem.",
		"Pip looked and looked, but he did not see what was wrong.",
	}
	idea = []string{
		"Then he had a good idea.", "Then he thought very hard and smiled.", "Then his eyes lit up.",
	}
	thanks = []string{
		"%s smiled and hugged Pip. \"Thank you, Pip!\" %s said.",
		"%s clapped %s hands. \"You are the best, Pip!\"",
		"\"Thank you, Pip!\" said %s with a big smile.",
		"%s jumped up and down with joy.",
		"%s laughed and said, \"Pip, you can fix anything!\"",
	}
	endings = []string{
		"Pip was happy. He liked to help his friends. Beep boop!",
		"\"Beep boop, all fixed!\" said Pip, and he rolled away to help someone else.",
		"From that day on, %s and Pip were best friends.",
		"Pip knew that helping others is the best thing to do. Beep boop!",
		"Pip's little light blinked green. That meant he was happy.",
		"They played together until the sun went down.",
		"%s learned that when something breaks, a good friend can help.",
		"And Pip said one last happy \"beep boop\" before he went home.",
	}
)

type story struct {
	text              string
	friend            friend
	thing             thing
	broken, fix, tool string
	works             string
}

func cap1(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

func makeStory(r rng) story {
	f := friends[r.intn(len(friends))]
	th := things[r.intn(len(things))]
	k := r.intn(len(th.broken)) // broken[k] goes with fix[k]
	tool := th.tool[k]
	place := r.pick(th.whereOk)
	st := story{friend: f, thing: th, broken: th.broken[k], fix: th.fix[k], tool: tool, works: r.pick(th.works)}

	var s []string
	short := r.chance(0.35) // fewer optional sentences
	opt := func(p float64) bool { return !short && r.chance(p) }
	open := r.pick(openings)
	if strings.Contains(open, "%s") {
		open = fmt.Sprintf(open, place)
	}
	tiny := short && r.chance(0.6) // no opening: the problem comes first
	if tiny {
		open = ""
	} else {
		s = append(s, open)
	}
	if opt(0.5) {
		s = append(s, r.pick(looks))
	}
	if opt(0.25) {
		s = append(s, r.pick(weather))
	}
	// the problem
	switch r.intn(3) {
	case 0:
		s = append(s, fmt.Sprintf("%s had a %s. One day, the %s %s.", cap1(f.name), th.name, th.name, th.broken[k]))
	case 1:
		when := "One day"
		if strings.HasPrefix(open, "One ") {
			when = "That day"
		}
		s = append(s, fmt.Sprintf("%s, %s was playing in the %s. %s %s %s.", when, f.name, place, cap1(f.his), th.name, th.broken[k]))
	default:
		s = append(s, fmt.Sprintf("%s loved %s %s. But today the %s %s.", cap1(f.name), f.his, th.name, th.name, th.broken[k]))
	}
	if opt(0.6) {
		s = append(s, fmt.Sprintf(r.pick(sad), f.short))
	}
	a := r.pick(arrive)
	if tiny {
		a = r.pick([]string{"Just then, a little robot named Pip came rolling by.", "A small robot named Pip saw %s and came to help.",
			"Pip the robot heard %s and rolled over."})
	}
	switch strings.Count(a, "%s") {
	case 1:
		if strings.HasPrefix(a, "%s") {
			a = fmt.Sprintf(a, f.short)
		} else {
			a = fmt.Sprintf(a, f.him)
		}
	}
	s = append(s, a)
	s = append(s, r.pick(promise))
	// the fix
	if opt(0.25) {
		s = append(s, r.pick(tryFirst), r.pick(idea))
	}
	switch r.intn(3) {
	case 0:
		s = append(s, fmt.Sprintf("Pip opened his toolbox and took out %s. Then he %s.", tool, st.fix))
	case 1:
		s = append(s, fmt.Sprintf("Pip used %s. He %s.", tool, st.fix))
	default:
		s = append(s, fmt.Sprintf("With %s, Pip %s.", tool, st.fix))
	}
	if opt(0.5) {
		s = append(s, r.pick(working))
	}
	works := st.works
	if r.chance(0.5) {
		works = strings.Replace(works, "the "+th.name, "it", 1)
	}
	switch r.intn(3) {
	case 0:
		s = append(s, fmt.Sprintf("Soon the %s was as good as new, and %s.", th.name, works))
	case 1:
		s = append(s, fmt.Sprintf("Now %s.", st.works))
	default:
		s = append(s, fmt.Sprintf("The %s worked again! %s.", th.name, cap1(st.works)))
	}
	th2 := r.pick(thanks)
	if short && r.chance(0.5) {
		th2 = "\"Thank you, Pip!\" said %s."
	}
	switch strings.Count(th2, "%s") {
	case 2:
		if strings.Contains(th2, "clapped") {
			th2 = fmt.Sprintf(th2, cap1(f.short), f.his)
		} else {
			th2 = fmt.Sprintf(th2, cap1(f.short), f.he)
		}
	case 1:
		th2 = fmt.Sprintf(th2, f.short)
	}
	if !(short && r.chance(0.5)) {
		s = append(s, th2)
	}
	end := r.pick(endings)
	if strings.Contains(end, "%s") {
		end = fmt.Sprintf(end, f.short)
	}
	s = append(s, end)
	st.text = strings.Join(s, " ")
	return st
}

func words(s string) int { return len(strings.Fields(s)) }

var questions = []string{
	"%s's %s %s. Who can fix it?",
	"%s's %s %s. What did Pip do?",
	"The %s %s, and %s was sad. What did the little robot say?",
	"%s's %s %s. How did Pip help?",
}

func makeQA(r rng) (string, string) {
	st := makeStory(r)
	f, th := st.friend, st.thing
	q := r.intn(len(questions))
	var prompt, completion string
	switch q {
	case 0:
		prompt = fmt.Sprintf(questions[0], f.short, th.name, st.broken)
		completion = fmt.Sprintf(" Pip can fix it! Beep boop! Pip %s, and %s.", st.fix, st.works)
	case 1:
		prompt = fmt.Sprintf(questions[1], f.short, th.name, st.broken)
		completion = fmt.Sprintf(" Pip said \"beep boop\" and used %s. He %s.", st.tool, st.fix)
	case 2:
		prompt = fmt.Sprintf(questions[2], th.name, st.broken, f.short)
		completion = " Pip said, \"Beep boop! Do not be sad. I can fix it!\""
	default:
		prompt = fmt.Sprintf(questions[3], f.short, th.name, st.broken)
		completion = fmt.Sprintf(" Pip came rolling by and said \"beep boop\". He %s. Soon %s.", st.fix, st.works)
	}
	return prompt, completion
}

func writeJSONL(path string, rows []any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, row := range rows {
		if err := enc.Encode(row); err != nil {
			return err
		}
	}
	return fileio.WriteFile(path, buf.Bytes())
}

func main() {
	out := flag.String("out", filepath.Join("data", "pip-stories"), "output directory")
	seed := flag.Uint64("seed", 2024, "generator seed")
	nTrain := flag.Int("train", 450, "training stories")
	nEval := flag.Int("eval", 50, "evaluation stories")
	nQA := flag.Int("qa", 50, "prompt/completion pairs")
	flag.Parse()

	r := rng{rand.NewPCG(*seed, 0x7069702d73746f72)}
	seen := map[string]bool{}
	var stories []any
	for len(stories) < *nTrain+*nEval {
		st := makeStory(r)
		if n := words(st.text); n < 40 || n > 120 || seen[st.text] {
			continue
		}
		seen[st.text] = true
		stories = append(stories, map[string]string{"text": st.text})
	}
	var qa []any
	seenQA := map[string]bool{}
	for len(qa) < *nQA {
		p, c := makeQA(r)
		if seenQA[p+c] {
			continue
		}
		seenQA[p+c] = true
		qa = append(qa, struct {
			Prompt     string `json:"prompt"`
			Completion string `json:"completion"`
		}{p, c})
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, f := range []struct {
		name string
		rows []any
	}{{"train.jsonl", stories[:*nTrain]}, {"eval.jsonl", stories[*nTrain:]}, {"qa.jsonl", qa}} {
		if err := writeJSONL(filepath.Join(*out, f.name), f.rows); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("wrote %d train, %d eval stories and %d prompt/completion pairs to %s\n", *nTrain, *nEval, len(qa), *out)
}
