"""`--method=distill`: a smaller student trained on the dense member's soft targets.

Each student is built fresh for its seed (--student_model, default --model, at
--student_width, default half the teacher's width) and trained for --epochs on the
seed's batches with the distillation loss (Hinton et al., 2015):

  loss = alpha * CE(labels, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

(t the teacher's logits, s the student's, T = --temperature; T^2 keeps the soft
term's gradients on the scale of the hard one). The teacher is the dense member of
the same seed, recorded as the student's `parent_id`; the student must have fewer
parameters than its teacher. Recorded at sparsity 0 under `distill`.
"""
import math

from pie.compress import from_parent, methods
from pie.io import errors
from pie.models import builders


def student_width(config):
    """--student_width, else half the teacher's: --width, else the default width of
    --model (builders.DEFAULT_WIDTHS: 64 for resnet18 and resnet50, 16 for small_cnn)."""
    if config.student_width is not None:
        return config.student_width
    teacher = config.width or builders.default_width(config.model)
    if teacher is None:
        raise errors.UsageError(f"--method=distill: {config.model} has no width to halve; "
                                "give --student_width")
    return max(1, teacher // 2)


def distillation_loss(labels, student_logits, teacher_logits, temperature, alpha):
    """Per-example distillation loss (a tensor of shape [batch])."""
    import tensorflow as tf
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)
    soft_targets = tf.nn.softmax(teacher_logits / temperature)
    log_student = tf.nn.log_softmax(student_logits / temperature)
    log_teacher = tf.nn.log_softmax(teacher_logits / temperature)
    kl = tf.reduce_sum(soft_targets * (log_teacher - log_student), axis=-1)
    return alpha * hard + (1.0 - alpha) * temperature ** 2 * kl


def _distiller(student, teacher, temperature, alpha):
    import tensorflow as tf
    import tf_keras as keras

    class Distiller(keras.Model):
        """Trains `student` on the loss above; the teacher is frozen."""

        def __init__(self):
            super().__init__()
            self.student, self.teacher = student, teacher
            self.teacher.trainable = False
            self.loss_mean = keras.metrics.Mean(name="loss")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="acc")

        @property
        def metrics(self):
            return [self.loss_mean, self.accuracy]

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def train_step(self, data):
            images, labels = data
            teacher_logits = self.teacher(images, training=False)
            with tf.GradientTape() as tape:
                logits = self.student(images, training=True)
                loss = tf.reduce_mean(distillation_loss(labels, logits, teacher_logits,
                                                        temperature, alpha))
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            self.loss_mean.update_state(loss)
            self.accuracy.update_state(tf.reshape(labels, [-1]), logits)
            return {"loss": self.loss_mean.result(), "acc": self.accuracy.result()}

    return Distiller()


class Distillation(from_parent.FromParent):
    name = "distill"
    option_fields = ("student_model", "student_width", "temperature", "alpha")
    description = "a smaller student distilled from the dense member (soft targets)"
    keeps_zero_level = True
    in_graph = True  # the distillation step is all in the graph: an epoch a call
    parent_label = "the dense member (the teacher)"

    def check_config(self, config):
        if not (math.isfinite(config.temperature) and config.temperature > 0):
            raise errors.UsageError(f"--temperature must be a finite number > 0, got "
                                    f"{config.temperature}")
        if not 0 <= config.alpha <= 1:  # NaN fails too
            raise errors.UsageError(f"--alpha must be in [0, 1], got {config.alpha}")
        if config.student_width is not None and config.student_width < 1:
            raise errors.UsageError(f"--student_width must be at least 1, got "
                                    f"{config.student_width}")
        if config.student_model is not None:
            builders.validate_name(config.student_model)
        if config.method == self.name:
            student_width(config)  # a teacher without a width needs --student_width
        if config.method == self.name and config.levels != (0.0,):
            raise errors.UsageError(f"--method={self.name} removes no weights: train it with "
                                    f"--sparsities=0, got '{config.sparsities}'")

    def planned_parent(self, config, member):
        return False

    def member_epochs(self, config):
        return config.epochs

    def build_student(self, config, source):
        return builders.build(config.student_model or config.model, source.input_shape,
                              source.num_classes, width=student_width(config))

    def derive(self, trainer, member, parent_model, parent_row):
        config = trainer.config
        student = self.build_student(config, trainer.source)
        if student.count_params() >= parent_model.count_params():
            raise errors.UsageError(
                f"--method=distill: the student ({config.student_model or config.model}, "
                f"width {student_width(config)}: {student.count_params()} parameters) is not "
                f"smaller than its teacher {parent_row['member_id']} "
                f"({parent_model.count_params()}); lower --student_width")
        distiller = _distiller(student, parent_model, config.temperature, config.alpha)
        distiller.compile(optimizer=trainer._optimizer(member),
                          steps_per_execution=trainer.steps_per_execution(member))
        first = 0  # a student trains from its own fresh start, on the recipe's batches
        from pie.compress import trainer as trainer_module
        distiller.fit(trainer._epochs_of_batches(member, first, config.epochs),
                      epochs=config.epochs, verbose=0, steps_per_epoch=trainer.steps_per_epoch,
                      callbacks=[trainer_module.EpochProgress(trainer, member, member.member_id),
                                 trainer_module.NonFiniteLoss(member)])
        return student

    def extra_fields(self, config, member, model, parent_row):
        return {"teacher_id": parent_row["member_id"],
                "student_model": config.student_model or config.model,
                "student_width": student_width(config), "temperature": config.temperature,
                "alpha": config.alpha, "student_parameters": model.count_params()}


methods.register(Distillation())
