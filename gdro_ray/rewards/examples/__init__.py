"""Example reward functions for `reward.function` (each is `fn(prompts, responses, answers, metadata)`).

- `format_and_correct:format_and_correct_reward`: a small bonus for a well-formed response plus
  the math-verify correctness score.
- `any_of_answers:any_of_answers_reward`: correct when the boxed answer equals any one of several
  accepted answers.
"""
