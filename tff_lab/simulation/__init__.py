"""How a federated round is simulated: its plan, made once (`plan`), and the backends that
execute a plan through one protocol (`backends`).

See DESIGN.md ("One experiment, as data flowing through the toolkit"): a round is planned once
(`RoundPlan`: the sampled clients, their fault roles and their data plans) and a backend only
executes the plan (`RoundRunner.next(state, plan)`).
"""
