package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// mqttTopicRoot is where devices publish their readings: metrics/v1/<sensor id> (docs/mqtt.md).
const mqttTopicRoot = "metrics/v1/"

// openMQTT connects the devices to the broker, at most --open-rate a second, and closes allOpen once
// every device has tried to connect once.
func (r *runner) openMQTT(allOpen chan<- struct{}) {
	var interval time.Duration // between two publishes of a device; 0 = closed loop
	if r.cfg.rate > 0 {
		interval = time.Duration(float64(r.cfg.streams) / r.cfg.rate * float64(time.Second))
	}
	var firstTries sync.WaitGroup
	firstTries.Add(r.cfg.streams)
	timer := newStoppedTimer()
	began := time.Now()
	for i := range r.cfg.streams {
		due := time.Duration(float64(i) / r.cfg.openRate * float64(time.Second))
		if wait := due - time.Since(began); wait > 0 && !r.pause(timer, wait) {
			firstTries.Add(i - r.cfg.streams)
			break
		}
		d := &mqttDevice{r: r, id: i, sensor: i % r.cfg.sensors, interval: interval}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			d.run(firstTries.Done)
		}()
	}
	firstTries.Wait()
	close(allOpen)
}

// mqttDevice is one MQTT connection: a device publishing one reading per message at QoS 1, with at
// most --window messages awaiting their PUBACK.
type mqttDevice struct {
	r        *runner
	id       int
	sensor   int
	interval time.Duration
}

func (d *mqttDevice) options() *mqtt.ClientOptions {
	cfg := d.r.cfg
	scheme := "tcp"
	if cfg.tls != nil {
		scheme = "ssl"
	}
	opts := mqtt.NewClientOptions().
		AddBroker(scheme + "://" + cfg.target).
		SetClientID(cfg.prefix + "dev-" + strconv.Itoa(d.id)).
		SetCleanSession(true).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(30 * time.Second).
		SetAutoReconnect(false).
		SetOrderMatters(false).
		SetWriteTimeout(30 * time.Second)
	if cfg.tls != nil {
		opts.SetTLSConfig(cfg.tls.Clone())
	}
	if cfg.username != "" {
		opts.SetUsername(cfg.username).SetPassword(cfg.password)
	}
	return opts
}

// run connects (once: a device that cannot connect counts an error and ends), then publishes until
// sending stops and every PUBACK is in.
func (d *mqttDevice) run(firstTry func()) {
	r := d.r
	client := mqtt.NewClient(d.options())
	token := client.Connect()
	connected := token.WaitTimeout(60*time.Second) && token.Error() == nil
	firstTry()
	if !connected {
		r.st.fail("CONNECT " + errorText(token.Error()))
		return
	}
	r.st.open.Add(1)
	defer func() {
		r.st.open.Add(-1)
		client.Disconnect(250)
	}()

	topic := mqttTopicRoot + r.ids[d.sensor]
	window := make(chan struct{}, r.cfg.window)
	var pending sync.WaitGroup
	timer := newStoppedTimer()
	defer timer.Stop()
	next := time.Now()
	if d.interval > 0 {
		next = next.Add(rand.N(d.interval))
	}
	for {
		if d.interval > 0 && !r.pause(timer, time.Until(next)) {
			break
		}
		select {
		case window <- struct{}{}:
		case <-r.stop:
		}
		if r.stopping() {
			break
		}
		payload := d.payload()
		sent := time.Now()
		published := client.Publish(topic, 1, false, payload)
		r.st.sent.Add(1)
		pending.Add(1)
		go func() {
			defer pending.Done()
			defer func() { <-window }()
			if !published.WaitTimeout(drainTimeout + 20*time.Second) {
				r.st.fail("no PUBACK")
			} else if err := published.Error(); err != nil {
				r.st.fail("PUBLISH " + errorText(err))
			} else {
				r.st.ok(d.id, sent, 1)
			}
		}()
		if d.interval > 0 {
			next = next.Add(d.interval)
			if now := time.Now(); now.Sub(next) > d.interval {
				next = now // fell behind (the window was full): no burst to catch up
			}
		}
	}
	pending.Wait()
}

// payload is the compact JSON form: one reading, the broker's time of arrival or the device's own
// ("ts", milliseconds since 1970, strictly increasing per sensor).
func (d *mqttDevice) payload() []byte {
	r := d.r
	value := r.values[d.sensor]
	if !r.cfg.clientTime {
		return fmt.Appendf(nil, `{"%s": %g}`, metricType, value)
	}
	return fmt.Appendf(nil, `{"%s": %g, "ts": %d}`, metricType, value, r.clock.next(d.sensor, 1))
}

func errorText(err error) string {
	if err == nil {
		return "timeout"
	}
	return err.Error()
}
