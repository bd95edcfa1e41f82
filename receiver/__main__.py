from receiver.service import main
from runtime.lifecycle import run

run(main)
